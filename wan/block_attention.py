"""Self-attention of one block: [context sources ‖ current block], with RoPE applied on use.

A context policy (pipeline/context/) decides per block which stored keys are attended, in which
order and at which positions, as a list of `ContextSource`s. Every source's keys are gathered and
rotated once per layer and block and reused by the N denoising calls and the recache pass; per
call only the current block's queries and keys are rotated.

The recache pass is the same attention, run through `RecachePass`, which hands the block's own
per-layer queries, keys and values (before RoPE) back to the loop to be written into the cache.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F

from wan.kv_cache import FrameKVCache
from wan.rope import Rope3D


class ContextSource(Protocol):
    """One region of a block's attended context (sink, retrieved, local, compressed, ...)."""

    def keys_values(self, layer: int, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> keys after RoPE and values, [B, S, n, d]. q, k: [B, S_blk, n, d] of the block's first call of
        this layer (before RoPE); only sources that select by attention read them."""

    def describe(self, row: int) -> list[list[int | None]]:
        """[frame, temporal position, tokens] per attended frame (batch row `row`), in concatenation order."""


@dataclass
class CachedFrames:
    """Logical slots of the window cache, each rotated at its own temporal position."""

    cache: FrameKVCache
    slots: list[int]
    positions: list[int]
    rope: Rope3D
    grid_hw: tuple[int, int]

    @classmethod
    def of_frames(cls, cache: FrameKVCache, frames, positions, rope: Rope3D, grid_hw) -> "CachedFrames":
        return cls(cache, cache.slots_of(frames), list(positions), rope, grid_hw)

    def keys_values(self, layer, q, k):
        ck, cv = self.cache.read(layer, self.slots)
        pos = torch.tensor(self.positions, dtype=torch.long, device=ck.device)
        return self.rope.rotate(ck, pos, self.grid_hw), cv

    def describe(self, row):
        frames = [self.cache.frame_at(s) for s in self.slots]
        tokens = self.grid_hw[0] * self.grid_hw[1]
        return [[f, p, tokens] for f, p in zip(frames, self.positions)]


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


@dataclass
class RetrievedFrames:
    """Frames brought back from a history bank, all rotated at one temporal position."""

    kv: RetrievedKV
    frames: list[list[int]]  # [B][K] global frame index of every retrieved entry
    position: int
    rope: Rope3D
    grid_hw: tuple[int, int]

    def keys_values(self, layer, q, k):
        rk, rv = self.kv.k[layer].flatten(1, 2), self.kv.v[layer].flatten(1, 2)
        pos = torch.full((self.kv.num_frames,), self.position, dtype=torch.long, device=rk.device)
        return self.rope.rotate(rk, pos, self.grid_hw), rv

    def describe(self, row):
        tokens = self.grid_hw[0] * self.grid_hw[1]
        return [[f, self.position, tokens] for f in self.frames[row]]


@dataclass
class BlockContext:
    """What a policy decided for one block: attended sources in order, and the block's own positions."""

    frames: tuple[int, ...]  # the block's frames
    sources: list[ContextSource]
    query_positions: list[int]  # temporal RoPE position of each frame's queries
    key_positions: list[int]  # ... and of its own keys (they differ only in ∞-RoPE's flushed cache)
    slots: list[int] = field(default_factory=list)  # window-cache slots the recache pass writes
    # A prompt switch's window recache (pipeline/context/window_recache.py) attends its own keys from this frame of
    # the block on (LongLive's protected sink: the first frames' keys are neither attended nor stored) ...
    own_keys_from: int = 0
    # ... and, if > 0, block-causally in groups of this many frames (LongLive: no mask among its frames)
    causal_frames: int = 0

    def layout(self, row: int = 0) -> dict:
        """Queries and keys as [frame, position(, tokens)] in concatenation order (the fixtures' layout)."""
        keys = [[f, p, "cached", n] for src in self.sources for f, p, n in src.describe(row)]
        own = slice(self.own_keys_from, None)
        current = [[f, p, "current", None] for f, p in zip(self.frames[own], self.key_positions[own])]
        return {"queries": [[f, p] for f, p in zip(self.frames, self.query_positions)], "keys": keys + current}


class BlockAttention:
    def __init__(self, context: BlockContext, rope: Rope3D, grid_hw: tuple[int, int]):
        self.context, self.rope, self.grid_hw = context, rope, grid_hw
        self._query_pos = torch.tensor(context.query_positions, dtype=torch.long)
        self._key_pos = torch.tensor(context.key_positions[context.own_keys_from:], dtype=torch.long)
        self._context_kv: dict[int, tuple[torch.Tensor, torch.Tensor] | None] = {}

    def _layer_context(self, layer: int, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """-> rotated k, v: [B, S_ctx, n, d] of one layer (built on first use in the block)."""
        if layer not in self._context_kv:
            parts = [src.keys_values(layer, q, k) for src in self.context.sources]
            self._context_kv[layer] = (torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)) if parts else None
        return self._context_kv[layer]

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, k, v: [B, S, n, d] of the current block (before RoPE) -> [B, S, n, d]."""
        ctx = self._layer_context(layer, q, k)
        if self.context.own_keys_from:
            skip = self.context.own_keys_from * (k.shape[1] // len(self.context.frames))
            k, v = k[:, skip:], v[:, skip:]
        q = self.rope.rotate(q, self._query_pos, self.grid_hw).type_as(v)
        k = self.rope.rotate(k, self._key_pos, self.grid_hw).type_as(v)
        if ctx is not None:
            k = torch.cat([ctx[0].type_as(k), k], dim=1)
            v = torch.cat([ctx[1].type_as(v), v], dim=1)
        mask = self._causal_mask(q.shape[1], k.shape[1], q.device) if self.context.causal_frames else None
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
        return out.transpose(1, 2)

    def _causal_mask(self, num_queries: int, num_keys: int, device: torch.device) -> torch.Tensor:
        """[S_q, S_k] bool: every context key, and the own keys of the query's group of frames and earlier ones."""
        c = self.context
        tokens = num_queries // len(c.frames)
        group = torch.tensor(c.frames, device=device).repeat_interleave(tokens) // c.causal_frames
        own = group[c.own_keys_from * tokens:]
        visible = own.unsqueeze(0) <= group.unsqueeze(1)
        context = torch.ones(num_queries, num_keys - own.numel(), dtype=torch.bool, device=device)
        return torch.cat([context, visible], dim=1)


@dataclass
class BlockKV:
    """The block's own queries, keys and values (before RoPE) per layer, from its recache pass."""

    q: list[torch.Tensor] = field(default_factory=list)  # per layer [B, S_blk, n, d]
    k: list[torch.Tensor] = field(default_factory=list)
    v: list[torch.Tensor] = field(default_factory=list)


class RecachePass(BlockAttention):
    """The block's attention once more (same context), recording what the block writes back."""

    def __init__(self, attn: BlockAttention):
        super().__init__(attn.context, attn.rope, attn.grid_hw)
        self._context_kv = attn._context_kv
        self.block_kv = BlockKV()

    def attend(self, layer, q, k, v):
        self.block_kv.q.append(q)
        self.block_kv.k.append(k)
        self.block_kv.v.append(v)
        return super().attend(layer, q, k, v)
