"""Self-attention context of one block: [sink ‖ retrieved ‖ local] from the caches, then the block.

The context is the same for the N denoising calls and the recache call of a block, so each
layer's context keys are gathered and rotated once per block and reused; per call only the
current block's queries and keys are rotated.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from wan.context_layout import ContextLayout
from wan.kv_cache import FrameKVCache
from wan.rope import Rope3D


@dataclass
class RetrievedKV:
    """Keys (before RoPE) and values of the retrieved frames, for all layers, on the compute device.

    k, v: [L, B, K, T, n, d]; sample b may have retrieved different frames.
    """

    k: torch.Tensor
    v: torch.Tensor

    @property
    def num_frames(self) -> int:
        return self.k.shape[2]


class BlockAttention:
    def __init__(
        self,
        cache: FrameKVCache,
        layout: ContextLayout,
        rope: Rope3D,
        grid_hw: tuple[int, int],
        retrieved: RetrievedKV | None = None,
    ):
        if layout.num_retrieved != (retrieved.num_frames if retrieved is not None else 0):
            raise ValueError("layout.num_retrieved does not match the retrieved KV")
        self.cache, self.layout, self.rope, self.grid_hw = cache, layout, rope, grid_hw
        self.retrieved = retrieved
        device = cache.k.device
        self._context_pos = torch.tensor(layout.context_positions, dtype=torch.long, device=device)
        self._current_pos = torch.tensor(layout.current_positions, dtype=torch.long, device=device)
        self._context: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.write_cache = False

    def _context_kv(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """-> rotated k, v: [B, n_ctx * T, n, d] of one layer (built on first use in the block)."""
        if layer not in self._context:
            parts = []
            if self.layout.sink_frames:
                parts.append(self.cache.read(layer, self.layout.sink_frames))
            if self.retrieved is not None:
                parts.append((self.retrieved.k[layer].flatten(1, 2), self.retrieved.v[layer].flatten(1, 2)))
            if self.layout.local_frames:
                parts.append(self.cache.read(layer, self.layout.local_frames))
            if parts:
                k = torch.cat([p[0] for p in parts], dim=1)
                v = torch.cat([p[1] for p in parts], dim=1)
                k = self.rope.rotate(k, self._context_pos, self.grid_hw)
            else:
                k = v = None
            self._context[layer] = (k, v)
        return self._context[layer]

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, k, v: [B, S, n, d] of the current block (before RoPE) -> [B, S, n, d]."""
        if self.write_cache:
            self.cache.write(layer, self.layout.current_frames, k, v)
        q = self.rope.rotate(q, self._current_pos, self.grid_hw).type_as(v)
        k = self.rope.rotate(k, self._current_pos, self.grid_hw).type_as(v)
        ctx_k, ctx_v = self._context_kv(layer)
        if ctx_k is not None:
            k = torch.cat([ctx_k.type_as(k), k], dim=1)
            v = torch.cat([ctx_v.type_as(v), v], dim=1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2)
