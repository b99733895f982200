"""Weight-free drift metrics of one video (SPEC_NEXT §3.2).

- similarity versus time gap S(Δ) = mean_t cos(f_t, f_{t+Δ}) and similarity to the opening
  D(t) = cos(f_0, f_t) of per-frame features (channel-mean latents, retrieval-AE embeddings, and
  DINO ViT-B/16 features where the VBench environment exists: evaluation/dino.py);
- colour / exposure drift against the first second: ΔE of the mean Lab colour (CIE76), change of
  the L* spread (contrast) and of the mean relative luminance;
- sharpness drift: variance of the Laplacian relative to the first second;
- first-vs-last drift |m(first 5 s) − m(last 5 s)|.
Curves are stored binned to `curve_hz` so that a report over thousands of videos stays small.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from evaluation.frame_stats import FrameStats

CURVE_DIGITS = 5  # significant digits of stored curves


def rounded(values: np.ndarray) -> list[float]:
    return [float(f"{v:.{CURVE_DIGITS}g}") for v in np.asarray(values, dtype=np.float64)]


def channel_mean_features(latents: torch.Tensor) -> torch.Tensor:
    """latents: [F, C, H, W] -> [F, C] spatial means (the weight-free latent feature)."""
    return latents.float().mean(dim=(-2, -1))


def similarity_matrix(features: torch.Tensor) -> torch.Tensor:
    """features: [T, D] -> [T, T] cosine similarities."""
    unit = F.normalize(features.double(), dim=-1)
    return unit @ unit.T


def similarity_vs_gap(features: torch.Tensor) -> np.ndarray:
    """[T, D] -> S: [T - 1], S[g - 1] = mean over t of cos(f_t, f_{t+g}) for gaps g = 1 .. T - 1."""
    sim = similarity_matrix(features)
    return np.array([torch.diagonal(sim, offset=g).mean().item() for g in range(1, len(features))])


def similarity_to_opening(features: torch.Tensor) -> np.ndarray:
    """[T, D] -> D: [T], D[t] = cos(f_0, f_t)."""
    return similarity_matrix(features)[0].numpy()


def similarity_summary(features: torch.Tensor, rate: float, gap_seconds: list[float]) -> dict:
    """S(Δ) at the requested gaps (None where the video is shorter), its mean, and both curves.

    rate: features per second (latent frames: fps / 4)."""
    s_curve, d_curve = similarity_vs_gap(features), similarity_to_opening(features)
    at = {}
    for seconds in gap_seconds:
        gap = int(round(seconds * rate))
        at[f"{seconds:g}s"] = float(s_curve[gap - 1]) if 1 <= gap <= len(s_curve) else None
    return {"rate": rate, "S_at": at, "S_mean": float(s_curve.mean()) if len(s_curve) else None,
            "D_end": float(d_curve[-1]), "D_mean": float(d_curve.mean()),
            "S_curve": rounded(s_curve), "D_curve": rounded(d_curve)}


def reference_frames(fps: float, seconds: float, num_frames: int) -> int:
    """Frames in the opening `seconds` (at least 1, at most the video)."""
    return min(max(1, int(round(fps * seconds))), num_frames)


def drift_curves(stats: FrameStats, fps: float, reference_seconds: float) -> dict[str, np.ndarray]:
    """Per-frame drift against the mean of the first `reference_seconds`, each [T]."""
    n = reference_frames(fps, reference_seconds, len(stats.luminance))
    curves = {
        "delta_e": np.linalg.norm(stats.lab_mean - stats.lab_mean[:n].mean(0), axis=1),
        "contrast_drift": stats.lab_std[:, 0] - stats.lab_std[:n, 0].mean(),
        "luminance_drift": stats.luminance - stats.luminance[:n].mean(),
    }
    ref_sharp = stats.sharpness[:n].mean()
    if ref_sharp > 0:  # a flat opening (no edges) has no relative sharpness: the curve is left out
        curves["sharpness_ratio"] = stats.sharpness / ref_sharp
    return curves


def first_vs_last(series: np.ndarray, fps: float, seconds: float) -> float:
    """|mean over the first `seconds` − mean over the last `seconds`| (windows overlap on short videos)."""
    n = reference_frames(fps, seconds, len(series))
    return float(abs(series[:n].mean() - series[-n:].mean()))


def binned(series: np.ndarray, frames_per_bin: int) -> np.ndarray:
    """Means over consecutive bins of `frames_per_bin` frames (the last bin may be shorter)."""
    return np.array([series[i:i + frames_per_bin].mean() for i in range(0, len(series), frames_per_bin)])
