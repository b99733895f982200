"""All weight-free scores of one video: per-frame statistics, per-clip summaries, drift curves,
similarity curves of latent features, VDE and first-vs-last drift."""
from __future__ import annotations

import numpy as np
import torch

from evaluation.clips import clip_ranges
from evaluation.config import DriftConfig
from evaluation.drift import (binned, channel_mean_features, drift_curves, first_vs_last, rounded,
                              similarity_summary)
from evaluation.frame_stats import frame_stats
from evaluation.vde import video_drift_error

CURVE_HZ = 4.0  # stored curves: 4 values per second (the latent frame rate at 16 fps)


def clip_summaries(series: dict[str, np.ndarray], num_frames: int, fps: float, seconds: float) -> list[dict]:
    """Mean of every per-frame series over each VBench-Long clip."""
    return [{"index": i, "start_frame": start, "end_frame": end,
             **{name: float(values[start:end].mean()) for name, values in series.items()}}
            for i, (start, end) in enumerate(clip_ranges(num_frames, fps, seconds))]


def pixel_scores(frames: np.ndarray, fps: float, cfg: DriftConfig, device: torch.device = torch.device("cpu")) -> dict:
    """frames: [T, H, W, 3] uint8 -> clip summaries, drift curves, VDE and first-vs-last drift."""
    stats = frame_stats(frames, device)
    curves = drift_curves(stats, fps, cfg.reference_seconds)
    per_frame = {"sharpness": stats.sharpness, "luminance": stats.luminance, "lab_l": stats.lab_mean[:, 0],
                 "lab_a": stats.lab_mean[:, 1], "lab_b": stats.lab_mean[:, 2], "motion": stats.motion}
    frames_per_bin = max(1, int(round(fps / CURVE_HZ)))
    vde_series = {"clarity": stats.sharpness, "motion_framediff": stats.motion[1:], "luminance": stats.luminance}
    return {
        "num_frames": len(frames), "fps": fps, "seconds": len(frames) / fps,
        "clips": clip_summaries({**per_frame, **curves}, len(frames), fps, cfg.clip_seconds),
        "curve_hz": fps / frames_per_bin,
        "curves": {name: rounded(binned(values, frames_per_bin)) for name, values in curves.items()},
        "final_drift": {name: float(values[-max(1, int(round(fps))):].mean()) for name, values in curves.items()},  # last second
        "vde": {name: (video_drift_error(values, cfg.vde_chunks, cfg.vde_weighting)
                       if len(values) >= cfg.vde_chunks else None) for name, values in vde_series.items()},
        "first_vs_last": {name: first_vs_last(values, fps, cfg.first_last_seconds) for name, values in per_frame.items()},
    }


def latent_scores(latents: torch.Tensor, embeddings: torch.Tensor | None, rate: float, cfg: DriftConfig) -> dict:
    """latents: [F, C, H, W]; embeddings: [F, D] retrieval-AE embeddings or None -> S(Δ), D(t) per feature."""
    scores = {"latent_mean": similarity_summary(channel_mean_features(latents), rate, cfg.gap_seconds)}
    if embeddings is not None:
        scores["ae"] = similarity_summary(embeddings, rate, cfg.gap_seconds)
    return scores
