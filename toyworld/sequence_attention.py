"""Training counterpart of `wan.block_attention.BlockAttention`: every frame of a sample in one call.

The causal DiT asks its attention object for `attend(layer, q, k, v)`; here q, k, v hold the tokens
of all frames of a training sequence ([context ‖ target block]) and a frame attends to the frames
of its own group and of earlier groups, which is what the window cache gives at inference (a clean
context frame's keys were computed when it was generated; the block being denoised sees them all).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from wan.rope import Rope3D


class SequenceAttention:
    def __init__(self, rope: Rope3D, positions: torch.Tensor, groups: torch.Tensor, grid_hw: tuple[int, int]):
        """positions, groups: [S_frames] long (temporal RoPE index and attention group of every frame)."""
        if positions.shape != groups.shape:
            raise ValueError(f"positions {list(positions.shape)} and groups {list(groups.shape)} must match")
        self.rope, self.positions, self.grid_hw = rope, positions, grid_hw
        token_group = groups.repeat_interleave(grid_hw[0] * grid_hw[1])
        self.mask = token_group[None, :] <= token_group[:, None]  # [S, S]: query i may see key j

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, k, v: [B, S, n, d] (before RoPE) -> [B, S, n, d]."""
        q = self.rope.rotate(q, self.positions, self.grid_hw).type_as(v)
        k = self.rope.rotate(k, self.positions, self.grid_hw).type_as(v)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=self.mask.to(q.device))
        return out.transpose(1, 2)
