import numpy as np
import pytest
import torch

from utils.video_io import FPS, read_video, to_uint8_frames, write_video


def test_uint8_conversion_maps_range_and_clamps():
    video = torch.tensor([-1.0, 0.0, 1.0, 2.0, -3.0]).view(5, 1, 1, 1).expand(5, 3, 2, 2)
    frames = to_uint8_frames(video)
    assert frames.shape == (5, 2, 2, 3) and frames.dtype == np.uint8
    assert frames[:, 0, 0, 0].tolist() == [0, 128, 255, 255, 0]


def test_chunks_stream_into_one_video_with_all_frames_in_order(tmp_path):
    levels = torch.linspace(-0.8, 0.8, 9)
    frames = levels.view(9, 1, 1, 1).expand(9, 3, 64, 64)  # flat grey frames, one level each
    path = tmp_path / "out.mp4"
    count = write_video(path, [frames[:1], frames[1:5], frames[5:]])
    video = read_video(path)
    assert count == 9 and video.shape == (9, 64, 64, 3)
    expected = to_uint8_frames(frames)[:, 0, 0, 0].astype(float)
    assert np.abs(video.reshape(9, -1).mean(axis=1) - expected).max() < 3  # lossy codec, flat frames
    import imageio.v2 as imageio

    assert imageio.get_reader(path).get_meta_data()["fps"] == FPS
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_failed_write_leaves_neither_file_nor_temporary(tmp_path):
    def chunks():
        yield torch.zeros(2, 3, 16, 16)
        raise RuntimeError("decoder crashed")

    with pytest.raises(RuntimeError, match="decoder crashed"):
        write_video(tmp_path / "out.mp4", chunks())
    assert list(tmp_path.iterdir()) == []


def test_no_frames_is_an_error_without_output(tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "out.mp4", [])
    assert list(tmp_path.iterdir()) == []
