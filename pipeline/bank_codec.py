"""How the history bank stores K/V values: as-is in a float dtype, or as float8 with a scale.

K/V arrive from the window cache as `[L, B, m, T, n, d]` (m frames) and are encoded in that
layout; the storage then lays each frame out as one slab `[B, L, 2 (k, v), T, n, d]`.
`Fp8Codec` stores float8_e4m3fn with one float32 scale per (frame, sample, layer, k|v, head),
`[m, B, L, 2, n]`: the head's largest magnitude maps to the format's largest finite value, so no
value saturates and each head keeps its own range (K and V magnitudes differ by orders between
layers and heads). Decoding writes the gathered rows straight into the retrieved layout
`[L, 2, B, k, T, n, d]` in the compute dtype (one pass over the gathered bytes); fp8 is scaled
there in the compute dtype.
"""
from __future__ import annotations

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448: largest finite e4m3 value


class PlainCodec:
    """Values stored in `dtype` (the model dtype or a narrower float); no scale."""

    has_scale = False

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype

    def encode(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        """k, v: [L, B, m, T, n, d] -> the same in the storage dtype (no copy when the dtype matches)."""
        return k.to(self.dtype), v.to(self.dtype), None

    def decode(self, rows: list[torch.Tensor], scale: None, out: torch.Tensor) -> torch.Tensor:
        """rows: B * k slabs [L, 2, T, n, d] (sample-major) -> written into out: [L, 2, B, k, T, n, d]."""
        return _place(rows, out)


class Fp8Codec:
    """float8_e4m3fn values with a float32 scale per (frame, sample, layer, k|v, head): half of bf16."""

    has_scale = True
    dtype = FP8

    def encode(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """k, v: [L, B, m, T, n, d] -> (k, v in float8, same shape; scale float32 [m, B, L, 2, n])."""
        scales = []
        for x in (k, v):
            amax = x.float().abs().amax(dim=(3, 5))  # [L, B, m, n]
            scales.append((amax / FP8_MAX).clamp_min(torch.finfo(torch.float32).tiny))
        qk, qv = ((x.float() / s[:, :, :, None, :, None]).to(FP8) for x, s in zip((k, v), scales))
        return qk, qv, torch.stack(scales, dim=3).permute(2, 1, 0, 3, 4)

    def decode(self, rows: list[torch.Tensor], scale: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """rows: B * k float8 slabs [L, 2, T, n, d]; scale: [B, k, L, 2, n] -> written into out: [L, 2, B, k, T, n, d]."""
        _place(rows, out)
        return out.mul_(scale.permute(2, 3, 0, 1, 4)[:, :, :, :, None, :, None].to(out.dtype))


def _place(rows: list[torch.Tensor], out: torch.Tensor) -> torch.Tensor:
    """Copy (and convert) each row into its place of out: [L, 2, B, k, T, n, d]."""
    per_sample = out.shape[3]
    for i, row in enumerate(rows):
        out[:, :, i // per_sample, i % per_sample].copy_(row)
    return out


def make_codec(dtype: torch.dtype) -> PlainCodec | Fp8Codec:
    return Fp8Codec() if dtype == FP8 else PlainCodec(dtype)
