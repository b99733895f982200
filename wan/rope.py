"""3-axis rotary position embedding (time, height, width) of the Wan DiT.

A head vector of size d is read as d/2 complex pairs; the first pairs rotate with the temporal
position, then height, then width (split d/2 - 2*(d/2//3), d/2//3, d/2//3). Angles and the rotation
are computed in float64 and rounded back, as the reference does, so cached and freshly rotated keys
agree bit for bit.
"""
from __future__ import annotations

import torch


def _axis_frequencies(max_positions: int, axis_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """[max_positions, axis_dim // 2] complex128 table of e^{i * pos * theta^(-2m/axis_dim)}."""
    inv = 1.0 / torch.pow(theta, torch.arange(0, axis_dim, 2, dtype=torch.float64) / axis_dim)
    angles = torch.outer(torch.arange(max_positions, dtype=torch.float64), inv)
    return torch.polar(torch.ones_like(angles), angles)


class Rope3D:
    """Rotates [B, F*h*w, heads, head_dim] vectors given one temporal position per frame."""

    def __init__(self, head_dim: int, max_positions: int, device: torch.device | str = "cpu"):
        pairs = head_dim // 2
        hw_pairs = pairs // 3
        t_pairs = pairs - 2 * hw_pairs
        self.t = _axis_frequencies(max_positions, 2 * t_pairs).to(device)
        self.h = _axis_frequencies(max_positions, 2 * hw_pairs).to(device)
        self.w = _axis_frequencies(max_positions, 2 * hw_pairs).to(device)

    def to(self, device: torch.device | str) -> "Rope3D":
        self.t, self.h, self.w = self.t.to(device), self.h.to(device), self.w.to(device)
        return self

    def rotate(self, x: torch.Tensor, frame_positions: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        """x: [B, F*h*w, n, d]; frame_positions: [F] int (temporal RoPE index of each frame)."""
        b, s, n, d = x.shape
        h, w = grid_hw
        f = frame_positions.numel()
        if f * h * w != s:
            raise ValueError(f"RoPE got {s} tokens but {f} frames of {h}x{w}")
        freqs = torch.cat(
            [
                self.t[frame_positions.to(self.t.device)].view(f, 1, 1, -1).expand(f, h, w, -1),
                self.h[:h].view(1, h, 1, -1).expand(f, h, w, -1),
                self.w[:w].view(1, 1, w, -1).expand(f, h, w, -1),
            ],
            dim=-1,
        ).reshape(1, s, 1, d // 2)
        xc = torch.view_as_complex(x.to(torch.float64).reshape(b, s, n, d // 2, 2))
        return torch.view_as_real(xc * freqs).flatten(3).to(x.dtype)
