"""3-axis rotary position embedding (time, height, width) of the Wan DiT.

A head vector of size d is read as d/2 (even, odd) pairs; the first pairs rotate with the temporal
position, then height, then width (split d/2 - 2*(d/2//3), d/2//3, d/2//3). The angles are computed
once in float64 and kept as float32 cos/sin tables; per block `angles` looks up the cos/sin of every
token (one gather), and `apply` rotates with real float32 arithmetic on the pairs (no complex
tensors, no float64 per call). Rotation is a pure function of (vector, position), so cached keys
rotated at use and freshly rotated keys still agree bit for bit; against the float64 reference the
rotated vectors differ by float32 rounding (about 1e-7 relative).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def _axis_angles(max_positions: int, axis_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """[max_positions, axis_dim // 2] float64 angles pos * theta^(-2m/axis_dim)."""
    inv = 1.0 / torch.pow(theta, torch.arange(0, axis_dim, 2, dtype=torch.float64) / axis_dim)
    return torch.outer(torch.arange(max_positions, dtype=torch.float64), inv)


@dataclass
class RopeAngles:
    """cos, sin: [B or 1, S, 1, d/2] float32 of S tokens (one lookup, reused by every layer and call)."""

    cos: torch.Tensor
    sin: torch.Tensor

    @property
    def num_tokens(self) -> int:
        return self.cos.shape[1]


class Rope3D:
    """Rotates [B, F*h*w, heads, head_dim] vectors given one temporal position per frame."""

    def __init__(self, head_dim: int, max_positions: int, device: torch.device | str = "cpu"):
        pairs = head_dim // 2
        hw_pairs = pairs // 3
        t_pairs = pairs - 2 * hw_pairs
        # cos / sin per axis: [max_positions, axis pairs] float32 (rounded once from float64 angles)
        self.tables = {}
        for axis, axis_pairs in (("t", t_pairs), ("h", hw_pairs), ("w", hw_pairs)):
            angles = _axis_angles(max_positions, 2 * axis_pairs)
            self.tables[axis] = (angles.cos().float().to(device), angles.sin().float().to(device))

    @property
    def device(self) -> torch.device:
        return self.tables["t"][0].device

    def to(self, device: torch.device | str) -> "Rope3D":
        self.tables = {axis: (c.to(device), s.to(device)) for axis, (c, s) in self.tables.items()}
        return self

    def frame_angles(self, frame_positions: list[int] | torch.Tensor, grid_hw: tuple[int, int]) -> RopeAngles:
        """cos/sin of F whole frames, frame f at temporal position frame_positions[f] (built once per block:
        a list is copied to the device here, outside the network calls)."""
        h, w = grid_hw
        if isinstance(frame_positions, torch.Tensor):  # already on the device: no copy
            t = frame_positions.to(torch.long)
        else:
            t = torch.tensor(frame_positions, dtype=torch.long, device=self.device)
        f = t.numel()
        t_pos = t.view(f, 1).expand(f, h * w).reshape(1, f * h * w)
        token = torch.arange(h * w, device=self.device).repeat(f).view(1, f * h * w)
        return self.token_angles(t_pos, *grid_position(token, grid_hw))

    def token_angles(self, t: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> RopeAngles:
        """t, h, w: [B or 1, S] int positions of every token on the three axes (on the tables' device)."""
        t, h, w = torch.broadcast_tensors(t, h, w)
        (ct, st), (ch, sh), (cw, sw) = self.tables["t"], self.tables["h"], self.tables["w"]
        cos = torch.cat([ct[t], ch[h], cw[w]], dim=-1).unsqueeze(2)  # [B|1, S, 1, d/2]
        sin = torch.cat([st[t], sh[h], sw[w]], dim=-1).unsqueeze(2)
        return RopeAngles(cos, sin)

    def rotate(self, x: torch.Tensor, frame_positions: list[int] | torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        """x: [B, F*h*w, n, d]; frame_positions: F temporal RoPE indices (one per frame)."""
        f = len(frame_positions)
        if f * grid_hw[0] * grid_hw[1] != x.shape[1]:
            raise ValueError(f"RoPE got {x.shape[1]} tokens but {f} frames of {grid_hw[0]}x{grid_hw[1]}")
        return apply_rope(x, self.frame_angles(frame_positions, grid_hw))

    def rotate_tokens(self, x: torch.Tensor, t: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x: [B, S, n, d]; t, h, w: [B or 1, S] int positions of every token on the three axes."""
        return apply_rope(x, self.token_angles(t, h, w))


def apply_rope(x: torch.Tensor, angles: RopeAngles, out: torch.Tensor | None = None) -> torch.Tensor:
    """x: [B, S, n, d] -> x rotated pairwise in float32, in x's dtype (or written into `out`, same shape)."""
    if x.shape[1] != angles.num_tokens:
        raise ValueError(f"RoPE got {x.shape[1]} tokens but angles for {angles.num_tokens}")
    pairs = x.float().unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    cos, sin = angles.cos, angles.sin
    rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)
    if out is None:
        return rotated.to(x.dtype)
    return out.copy_(rotated)


def grid_position(token: torch.Tensor, grid_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token index within a frame (row-major over the h x w patch grid) -> (row, column)."""
    return token // grid_hw[1], token % grid_hw[1]
