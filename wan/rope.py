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
        s = x.shape[1]
        h, w = grid_hw
        f = frame_positions.numel()
        if f * h * w != s:
            raise ValueError(f"RoPE got {s} tokens but {f} frames of {h}x{w}")
        t_pos = frame_positions.to(self.t.device).view(f, 1, 1).expand(f, h, w)
        token = torch.arange(h * w, device=self.t.device).repeat(f).view(1, s)
        return self.rotate_tokens(x, t_pos.reshape(1, s), *grid_position(token, grid_hw))

    def rotate_tokens(self, x: torch.Tensor, t: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x: [B, S, n, d]; t, h, w: [B or 1, S] int positions of every token on the three axes."""
        b, s, n, d = x.shape
        dev = self.t.device
        t, h, w = torch.broadcast_tensors(t.to(dev), h.to(dev), w.to(dev))
        freqs = torch.cat([self.t[t], self.h[h], self.w[w]], dim=-1)  # [B|1, S, d/2]
        xc = torch.view_as_complex(x.to(torch.float64).reshape(b, s, n, d // 2, 2))
        return torch.view_as_real(xc * freqs.unsqueeze(2).to(xc.device)).flatten(3).to(x.dtype)


def grid_position(token: torch.Tensor, grid_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token index within a frame (row-major over the h x w patch grid) -> (row, column)."""
    return token // grid_hw[1], token % grid_hw[1]
