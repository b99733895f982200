"""Training objective of the retrieval autoencoder (SPEC §2, equations 3, 6-9).

Every term is returned per chunk (shape [B]) so that callers can average over a batch, or
gather per-chunk values across processes for an exact validation mean. Embeddings are the
un-normalised encoder outputs v: [B, S, D] of S consecutive frames.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from utils.config import ConfigError


@dataclass
class LossConfig:
    """Weights and shape of the objective; the field names are the training YAML keys."""

    rec_weight: float = 1.0  # λ_rec
    delta_weight: float = 1.0  # λ_Δ
    delta_window: int = 3  # w
    delta_margin: float = 0.85  # m
    smooth_weight: float = 1.0  # λ_s

    def validate(self) -> None:
        if self.delta_window < 1:
            raise ConfigError(f"delta_window must be >= 1, got {self.delta_window}")
        for key in ("rec_weight", "delta_weight", "smooth_weight"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        if not -1.0 <= self.delta_margin <= 1.0:
            raise ConfigError(f"delta_margin is a cosine similarity in [-1, 1], got {self.delta_margin}")


def reconstruction_loss(x_rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Eq. 3, per chunk. x_rec, x: [B, S, C, H, W] -> [B]."""
    return (x_rec.float() - x.float()).pow(2).flatten(1).mean(dim=1)


def delta_loss(a: torch.Tensor, b: torch.Tensor, weight: float, margin: float) -> torch.Tensor:
    """Eq. 6: λ_Δ · max(0, cos(a, b) − m). a, b: [..., D] -> [...]."""
    return weight * torch.relu(F.cosine_similarity(a.float(), b.float(), dim=-1) - margin)


def seq_delta_loss(z: torch.Tensor, weight: float, margin: float, window: int) -> torch.Tensor:
    """Eq. 7, per chunk: (1/w̄) Σ_{τ=1..w̄} mean_t L_Δ(v_t, v_{t−τ}), w̄ = min(w, S−1). z: [B, S, D] -> [B]."""
    seq_len = z.shape[1]
    w_bar = min(window, seq_len - 1)
    if w_bar < 1:
        return z.new_zeros(z.shape[0], dtype=torch.float32)
    per_lag = [delta_loss(z[:, tau:], z[:, :-tau], weight, margin).mean(dim=1) for tau in range(1, w_bar + 1)]
    return torch.stack(per_lag, dim=1).mean(dim=1)


def smooth_loss(z: torch.Tensor, weight: float) -> torch.Tensor:
    """Eq. 8, per chunk: λ_s · mean_{t=3..S} ‖v_t − 2v_{t−1} + v_{t−2}‖₂; zero when S < 3. z: [B, S, D] -> [B]."""
    if z.shape[1] < 3:
        return z.new_zeros(z.shape[0], dtype=torch.float32)
    z = z.float()
    second_diff = z[:, 2:] - 2 * z[:, 1:-1] + z[:, :-2]  # [B, S-2, D]
    return weight * second_diff.norm(dim=-1).mean(dim=1)


def autoencoder_loss_terms(
    x: torch.Tensor, x_rec: torch.Tensor, z: torch.Tensor, loss: LossConfig
) -> dict[str, torch.Tensor]:
    """Eq. 9 and its parts, per chunk: {"rec", "seqdelta", "smooth", "total"}, each [B].

    x, x_rec: [B, S, C, H, W]; z: [B, S, D]. "rec" is the unweighted MSE; "total" applies λ_rec.
    """
    rec = reconstruction_loss(x_rec, x)
    seqdelta = seq_delta_loss(z, loss.delta_weight, loss.delta_margin, loss.delta_window)
    smooth = smooth_loss(z, loss.smooth_weight)
    return {"rec": rec, "seqdelta": seqdelta, "smooth": smooth, "total": loss.rec_weight * rec + seqdelta + smooth}
