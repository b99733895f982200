"""VBench-Long clip protocol: 2 s clips with a borrowing last clip, safe names, grouping back to videos."""
import imageio.v2 as imageio
import numpy as np
import pytest

from evaluation.clips import ClipNameError, check_video_name, clip_ranges, group_clip_scores, video_means, video_of_clip


def write_synthetic(path, num_frames, fps=16):
    """Frame t is a flat grey of level 2 t (so a clip's frames can be told apart after decoding)."""
    frames = [np.full((32, 32, 3), 2 * t, np.uint8) for t in range(num_frames)]
    imageio.mimwrite(path, frames, fps=fps, codec="libx264", quality=10, macro_block_size=1)


def test_clip_ranges_cut_two_second_clips_and_the_last_one_borrows_earlier_frames():
    assert clip_ranges(64, 16, 2.0) == [(0, 32), (32, 64)]
    assert clip_ranges(77, 16, 2.0) == [(0, 32), (32, 64), (45, 77)]  # 13 left over: borrows 19 frames
    assert clip_ranges(20, 16, 2.0) == [(0, 20)]  # shorter than one clip: the whole video
    assert clip_ranges(477, 16, 2.0)[-1] == (445, 477) and len(clip_ranges(477, 16, 2.0)) == 15  # a 30 s video


def test_clips_of_synthetic_videos_hold_the_right_frames_and_group_back(tmp_path):
    lengths = {"0000-0": 77, "0001-0": 64}
    clip_scores = {}
    for name, n in lengths.items():
        write_synthetic(tmp_path / f"{name}.mp4", n)
        frames = np.stack(imageio.mimread(tmp_path / f"{name}.mp4", memtest=False))
        assert len(frames) == n
        for index, (start, end) in enumerate(clip_ranges(len(frames), 16, 2.0)):
            assert end - start == 32
            levels = frames[start:end].mean(axis=(1, 2, 3)) / 2  # recovers the frame index within codec error
            np.testing.assert_allclose(levels, np.arange(start, end), atol=1.0)
            clip_scores[f"{name}_{index:03d}"] = float(np.mean(np.arange(start, end)))  # VBench's clip names
    grouped = group_clip_scores(clip_scores)
    assert sorted(grouped) == ["0000-0", "0001-0"] and len(grouped["0000-0"]) == 3 and len(grouped["0001-0"]) == 2
    means = video_means(clip_scores)
    assert means["0000-0"] == pytest.approx((15.5 + 47.5 + 60.5) / 3)
    assert means["0001-0"] == pytest.approx((15.5 + 47.5) / 2)


def test_names_that_vbench_would_mis_group_are_refused():
    assert video_of_clip(f"{check_video_name('r1-0003-0')}_007") == "r1-0003-0"
    for bad in ("my_video", "a prompt", "x-Scene-1", "v.1"):
        with pytest.raises(ClipNameError, match="mis-grouped"):
            check_video_name(bad)
    # the trap itself: names with '_' collapse into one video
    assert video_of_clip("cat_run_000") == video_of_clip("cat_sleep_000") == "cat"
