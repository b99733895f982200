"""Video Drift Error (LV-Bench; SPEC_NEXT §3.2): how far a per-chunk metric moves from the first chunk.

The video is cut into N equal chunks (np.array_split: sizes differ by at most one frame), m_i is the
mean of a per-frame metric over chunk i, and VDE = Σ_{i=2..N} w_i |m_i − m_1| / m_1 with
w_i = N − i + 1 (linear) or ln(N − i + 1) (log). Lower is better; 0 for a metric that never moves.
"""
from __future__ import annotations

import math

import numpy as np


def chunk_means(series: np.ndarray, num_chunks: int) -> np.ndarray:
    """series: [T] per-frame values -> [N] chunk means."""
    if len(series) < num_chunks:
        raise ValueError(f"a series of {len(series)} frames cannot be cut into {num_chunks} chunks")
    return np.array([chunk.mean() for chunk in np.array_split(np.asarray(series, dtype=np.float64), num_chunks)])


def vde_weights(num_chunks: int, weighting: str) -> np.ndarray:
    """w_i for i = 2..N (1-based chunk index)."""
    remaining = np.arange(num_chunks - 1, 0, -1, dtype=np.float64)  # N - i + 1 for i = 2..N
    if weighting == "linear":
        return remaining
    if weighting == "log":
        return np.log(remaining)
    raise ValueError(f"VDE weighting '{weighting}' is not 'linear' or 'log'")


def video_drift_error(series: np.ndarray, num_chunks: int = 10, weighting: str = "linear") -> float | None:
    """VDE of a per-frame metric; None when the first chunk's mean is 0 (relative drift undefined)."""
    means = chunk_means(series, num_chunks)
    if means[0] == 0:
        return None
    value = float(np.sum(vde_weights(num_chunks, weighting) * np.abs(means[1:] - means[0]) / abs(means[0])))
    return value if math.isfinite(value) else None
