"""How the history bank stores K/V values: as-is in a float dtype, or as float8 with a scale.

A slab is one banked frame's K/V, `[B, L, 2 (k, v), T, n, d]`. `Fp8Codec` stores it as
float8_e4m3fn with one float32 scale per (sample, layer, k|v, head), `[B, L, 2, n]`: the
head's largest magnitude maps to the format's largest finite value, so no value saturates and
each head keeps its own range (K and V magnitudes differ by orders between layers and heads).
Payloads are kept as raw bytes by the storage (uint8 views): every tier can copy and index them,
including memory-mapped files, whatever the platform's float8 kernel coverage.
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

    def encode(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, None]:
        """k, v: [L, B, m, T, n, d] -> payload [m, B, L, 2, T, n, d] in the storage dtype (one copy of each)."""
        out = torch.empty(_slab_shape(k.shape), dtype=self.dtype, device=k.device)
        out.select(3, 0).copy_(k.permute(2, 1, 0, 3, 4, 5))
        out.select(3, 1).copy_(v.permute(2, 1, 0, 3, 4, 5))
        return out, None

    def decode(self, payload: torch.Tensor, scale: None, dtype: torch.dtype) -> torch.Tensor:
        """payload: [B, k, L, 2, T, n, d] -> [L, 2, B, k, T, n, d] contiguous in `dtype` (one copy)."""
        out = torch.empty(_decoded_shape(payload.shape), dtype=dtype, device=payload.device)
        out.copy_(payload.permute(2, 3, 0, 1, 4, 5, 6))
        return out


class Fp8Codec:
    """float8_e4m3fn values with a float32 scale per (sample, layer, k|v, head): half of bf16."""

    has_scale = True
    dtype = FP8

    def encode(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v: [L, B, m, T, n, d] -> (payload float8 [m, B, L, 2, T, n, d]; scale float32 [m, B, L, 2, n])."""
        x = torch.empty(_slab_shape(k.shape), dtype=torch.float32, device=k.device)
        x.select(3, 0).copy_(k.permute(2, 1, 0, 3, 4, 5))
        x.select(3, 1).copy_(v.permute(2, 1, 0, 3, 4, 5))
        amax = x.abs().amax(dim=(4, 6))
        scale = (amax / FP8_MAX).clamp_min(torch.finfo(torch.float32).tiny)
        payload = (x / scale[:, :, :, :, None, :, None]).to(FP8)
        return payload, scale

    def decode(self, payload: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """payload: [B, k, L, 2, T, n, d] float8; scale: [B, k, L, 2, n] -> [L, 2, B, k, T, n, d] in `dtype`."""
        out = torch.empty(_decoded_shape(payload.shape), dtype=torch.float32, device=payload.device)
        out.copy_(payload.permute(2, 3, 0, 1, 4, 5, 6))
        out.mul_(scale.permute(2, 3, 0, 1, 4)[:, :, :, :, None, :, None])
        return out.to(dtype)


def _slab_shape(shape: torch.Size) -> tuple[int, ...]:
    l, b, m, t, n, d = shape
    return (m, b, l, 2, t, n, d)


def _decoded_shape(shape: torch.Size) -> tuple[int, ...]:
    b, k, l, two, t, n, d = shape
    return (l, two, b, k, t, n, d)


def make_codec(dtype: torch.dtype) -> PlainCodec | Fp8Codec:
    return Fp8Codec() if dtype == FP8 else PlainCodec(dtype)
