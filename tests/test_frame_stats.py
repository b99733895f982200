"""Per-frame Lab colour, luminance, Laplacian sharpness and motion against hand-computed values."""
import numpy as np
import pytest
import torch

from evaluation.frame_stats import frame_stats, laplacian_variance, relative_luminance, srgb_to_lab


def test_lab_of_reference_colours():
    rgb = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    lab = srgb_to_lab(rgb)
    expected = torch.tensor([[100.0, 0.0, 0.0], [0.0, 0.0, 0.0], [53.24, 80.09, 67.20], [87.73, -86.18, 83.18]])
    torch.testing.assert_close(lab, expected, atol=0.02, rtol=0)
    torch.testing.assert_close(relative_luminance(rgb), torch.tensor([1.0, 0.0, 0.2126729, 0.7151522]))


def test_laplacian_variance_of_flat_and_checkerboard_images():
    assert laplacian_variance(torch.full((1, 8, 8), 100.0)).item() == 0.0
    board = torch.tensor(np.indices((8, 8)).sum(0) % 2 * 10.0, dtype=torch.float32)[None]  # 0/10 checkerboard
    # interior response: ±40 (4 neighbours of the other value minus 4 x itself), equally many of each sign
    assert laplacian_variance(board).item() == pytest.approx(1600.0)


def test_frame_stats_of_a_static_and_a_moving_video():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    static = frame_stats(np.repeat(frame[None], 70, axis=0))  # 70 > one processing chunk
    assert np.ptp(static.lab_mean, axis=0).max() == 0 and np.ptp(static.sharpness) == 0
    assert static.motion.max() == 0
    shifted = np.stack([frame, np.roll(frame, 1, axis=1)])
    moving = frame_stats(shifted)
    grey = lambda f: f.astype(np.float64) @ [0.299, 0.587, 0.114]
    assert moving.motion[1] == pytest.approx(np.abs(grey(shifted[1]) - grey(shifted[0])).mean(), rel=1e-5)
