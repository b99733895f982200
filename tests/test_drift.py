"""Drift metrics on synthetic videos whose answers are known: static, colour ramp, hard cut, returning scene."""
import math

import numpy as np
import pytest
import torch

from evaluation.config import DriftConfig
from evaluation.drift import (channel_mean_features, drift_curves, first_vs_last, similarity_summary,
                              similarity_to_opening, similarity_vs_gap)
from evaluation.frame_stats import frame_stats, srgb_to_lab
from evaluation.video_scores import latent_scores, pixel_scores

FPS = 16


def latents_from(features: torch.Tensor) -> torch.Tensor:
    """[T, C] channel means -> [T, C, 4, 4] latents whose spatial mean is exactly `features`."""
    pattern = torch.tensor([1.0, -1.0]).repeat(8).view(4, 4)  # zero-mean texture
    return features[:, :, None, None] + 0.5 * pattern


def flat_video(levels) -> np.ndarray:
    """[T] grey levels -> [T, 16, 16, 3] uint8 flat frames."""
    return np.repeat(np.asarray(levels, np.uint8)[:, None, None, None], 16, axis=1).repeat(16, 2).repeat(3, 3)


def textured(frames: np.ndarray) -> np.ndarray:
    """Add a fixed checkerboard (so sharpness is defined) without changing frame means much."""
    board = (np.indices(frames.shape[1:3]).sum(0) % 2 * 20 - 10)[None, :, :, None]
    return np.clip(frames.astype(int) + board, 0, 255).astype(np.uint8)


def test_static_video_has_no_drift():
    features = torch.randn(1, 16).repeat(40, 1)
    torch.testing.assert_close(channel_mean_features(latents_from(features)), features, atol=1e-6, rtol=0)
    np.testing.assert_allclose(similarity_vs_gap(features), 1.0, atol=1e-12)
    np.testing.assert_allclose(similarity_to_opening(features), 1.0, atol=1e-12)
    rng = np.random.default_rng(1)
    frames = np.repeat(rng.integers(0, 256, (1, 16, 16, 3), dtype=np.uint8), 48, axis=0)
    scores = pixel_scores(frames, FPS, DriftConfig())
    assert scores["final_drift"] == {"delta_e": 0.0, "contrast_drift": 0.0, "luminance_drift": 0.0, "sharpness_ratio": 1.0}
    assert all(v == 0.0 for v in scores["vde"].values() if v is not None)
    assert scores["vde"]["motion_framediff"] is None  # no motion at all: relative drift undefined
    assert all(v == 0.0 for v in scores["first_vs_last"].values())
    assert [c["start_frame"] for c in scores["clips"]] == [0, 16] and scores["clips"][1]["end_frame"] == 48


def test_colour_ramp_drifts_monotonically_with_the_expected_similarity():
    t = torch.arange(40, dtype=torch.float64)
    features = torch.stack([torch.ones(40, dtype=torch.float64), t / 40], dim=1)  # direction turns slowly
    np.testing.assert_allclose(similarity_to_opening(features), (1 / torch.sqrt(1 + (t / 40) ** 2)).numpy(), rtol=1e-12)
    gaps = similarity_vs_gap(features)
    assert np.all(np.diff(gaps) < 0)  # the further apart, the less similar
    frames = np.zeros((64, 16, 16, 3), np.uint8)
    frames[..., 0] = np.linspace(0, 252, 64).astype(np.uint8)[:, None, None]  # red ramps up
    curves = drift_curves(frame_stats(frames), FPS, 1.0)
    assert np.all(np.diff(curves["delta_e"][16:]) > 0) and np.all(np.diff(curves["luminance_drift"]) >= 0)
    red = lambda level: srgb_to_lab(torch.tensor([float(level) / 255, 0.0, 0.0])).numpy()
    opening = np.mean([red(v) for v in np.linspace(0, 252, 64).astype(np.uint8)[:16]], axis=0)
    expected_last = np.linalg.norm(red(252) - opening)
    assert curves["delta_e"][-1] == pytest.approx(expected_last, rel=1e-4)


def test_hard_cut_drops_similarity_and_shifts_exposure():
    a, b = torch.zeros(8), torch.zeros(8)
    a[0], b[1] = 1.0, 1.0  # orthogonal scenes
    features = torch.stack([a] * 20 + [b] * 20)
    d = similarity_to_opening(features)
    assert np.all(d[:20] == 1.0) and np.all(np.abs(d[20:]) < 1e-12)
    s = similarity_vs_gap(features)
    for gap in (1, 5, 20):
        assert s[gap - 1] == pytest.approx((40 - 2 * gap) / (40 - gap))  # pairs across the cut score 0
    summary = similarity_summary(features, rate=4.0, gap_seconds=[1.0, 5.0, 20.0])
    assert summary["S_at"]["1s"] == pytest.approx(32 / 36) and summary["S_at"]["20s"] is None  # 80 frames > video
    frames = textured(flat_video([60] * 32 + [180] * 32))
    stats = frame_stats(frames)
    curves = drift_curves(stats, FPS, 1.0)
    assert np.all(curves["luminance_drift"][:32] == 0) and np.all(curves["luminance_drift"][32:] > 0.2)
    assert first_vs_last(stats.luminance, FPS, 2.0) == pytest.approx(stats.luminance[-1] - stats.luminance[0])
    assert first_vs_last(stats.motion, FPS, 1.0) == 0.0  # no motion inside either scene


def test_returning_scene_comes_back_to_full_similarity():
    a, b = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), torch.tensor([0.6, 0.8, 0.0], dtype=torch.float64)
    features = torch.stack([a] * 10 + [b] * 10 + [a] * 10)
    d = similarity_to_opening(features)
    np.testing.assert_allclose(d[10:20], 0.6, rtol=1e-12)
    np.testing.assert_allclose(d[20:], 1.0, rtol=1e-12)
    s = similarity_vs_gap(features)
    assert s[19] == pytest.approx(1.0)  # every pair 20 frames apart is scene A with scene A
    assert s[9] == pytest.approx(0.6)  # every pair 10 frames apart straddles a change
    frames = textured(flat_video([60] * 16 + [180] * 16 + [60] * 16))
    curves = drift_curves(frame_stats(frames), FPS, 1.0)
    assert np.all(curves["delta_e"][32:] == 0) and np.all(curves["delta_e"][16:32] > 10)
    np.testing.assert_allclose(curves["sharpness_ratio"][32:], 1.0)


def test_latent_scores_use_channel_means_and_the_embedding():
    features = torch.stack([torch.tensor([1.0, 0.0])] * 6 + [torch.tensor([0.0, 1.0])] * 6)
    embeddings = torch.ones(12, 4)
    scores = latent_scores(latents_from(features), embeddings, 4.0, DriftConfig(gap_seconds=[1.0]))
    assert scores["latent_mean"]["D_end"] == pytest.approx(0.0, abs=1e-12)
    assert scores["ae"]["D_end"] == pytest.approx(1.0) and scores["ae"]["S_mean"] == pytest.approx(1.0)
    assert scores["latent_mean"]["S_at"]["1s"] == pytest.approx(4 / 8)  # gap 4: 4 of 8 pairs cross the cut
    assert math.isclose(scores["latent_mean"]["D_curve"][0], 1.0)
