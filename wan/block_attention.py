"""Self-attention of one block: [context sources ‖ current block], with RoPE applied on use.

A context policy (pipeline/context/) decides per block which stored keys are attended, in which
order and at which positions, as a list of `ContextSource`s. Index tensors and RoPE cos/sin are built
once per block, before its first call (a list becomes a device tensor there, never inside a call).
Every source's keys are gathered and rotated once per layer and block, into a per-layer buffer
[context ‖ current block] (`ContextBuffers`, reused from block to block) that the N denoising calls
and the recache pass share; per call only the current block's queries and keys are rotated, and its
keys/values are written beside the context (no concatenation of the context per call).

The recache pass is the same attention, run through `RecachePass`, which hands the block's own
per-layer queries, keys and values (before RoPE) back to the loop to be written into the cache.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F

from wan.kv_cache import FrameKVCache
from wan.rope import Rope3D, apply_rope


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

    def __post_init__(self):
        # built with the block's context (after the cache admitted the block), used by every layer
        self._index = self.cache.index(self.slots)
        self._angles = self.rope.frame_angles(self.positions, self.grid_hw)

    @classmethod
    def of_frames(cls, cache: FrameKVCache, frames, positions, rope: Rope3D, grid_hw) -> "CachedFrames":
        return cls(cache, cache.slots_of(frames), list(positions), rope, grid_hw)

    def keys_values(self, layer, q, k):
        ck, cv = self.cache.read(layer, self._index)
        return apply_rope(ck, self._angles), cv

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

    kv: RetrievedKV | None  # None once every layer is copied into the context buffers
    frames: torch.Tensor  # [B, K] global frame index of every retrieved entry
    position: int
    rope: Rope3D
    grid_hw: tuple[int, int]

    def __post_init__(self):
        self._angles = self.rope.frame_angles([self.position] * self.kv.num_frames, self.grid_hw)
        self._layers_unread = self.kv.k.shape[0]

    def keys_values(self, layer, q, k):
        rk, rv = self.kv.k[layer].flatten(1, 2), self.kv.v[layer].flatten(1, 2)
        self._layers_unread -= 1
        if not self._layers_unread:  # every layer is copied into the context buffers: release the gathered K/V
            self.kv = None
        return apply_rope(rk, self._angles), rv

    def describe(self, row):
        tokens = self.grid_hw[0] * self.grid_hw[1]
        return [[f, self.position, tokens] for f in self.frames[row].tolist()]


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


class ContextBuffers:
    """Per-layer K, V of a block's attention, [B, S_ctx + S_blk, n, d]: the rotated context in front, the
    current block's rotated keys and values written behind it by every call. Kept for the whole rollout
    and reused by every block; reallocated only when a block needs more tokens than any before (while
    the window fills), so the steady state allocates nothing and attends fixed-shape tensors."""

    def __init__(self):
        self._k: dict[int, torch.Tensor] = {}
        self._v: dict[int, torch.Tensor] = {}

    def get(self, layer: int, like: torch.Tensor, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """like: [B, S_blk, n, d] (batch, heads, dtype, device) -> views k, v: [B, tokens, n, d]."""
        b, _, n, d = like.shape
        buf = self._k.get(layer)
        if buf is None or buf.shape[1] < tokens or (buf.shape[0], *buf.shape[2:]) != (b, n, d) \
                or buf.dtype != like.dtype or buf.device != like.device:
            self._k[layer] = like.new_empty(b, tokens, n, d)
            self._v[layer] = like.new_empty(b, tokens, n, d)
        return self._k[layer][:, :tokens], self._v[layer][:, :tokens]


class BlockAttention:
    def __init__(self, context: BlockContext, rope: Rope3D, grid_hw: tuple[int, int], buffers: ContextBuffers | None = None):
        """buffers: the rollout's reused context buffers (default: fresh ones for this block)."""
        self.context, self.rope, self.grid_hw = context, rope, grid_hw
        self.buffers = buffers or ContextBuffers()
        self._query_angles = rope.frame_angles(context.query_positions, grid_hw)
        own_positions = context.key_positions[context.own_keys_from:]
        same = own_positions == context.query_positions
        self._key_angles = self._query_angles if same else rope.frame_angles(own_positions, grid_hw)
        self._layers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # layer -> (K, V) buffers
        self._mask: torch.Tensor | None = None  # with context.causal_frames: one mask for every layer and call

    @property
    def compilable(self) -> bool:
        """Whether a call only reads the block's context: the first call has built every layer's context and
        it is not empty. Such calls are one function of their inputs, the shapes fixed once the window is
        full: what `compile` traces. (A block without context would pin the buffer size to the block's.)"""
        return bool(self._layers) and bool(self.context.sources)

    def _layer_buffers(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q, k: [B, S_blk, n, d] of the block; v: [B, S_own, n, d] its attended own values -> K, V:
        [B, S_ctx + S_own, n, d] with the rotated context of `layer` in front (assembled on first use in the block)."""
        if layer not in self._layers:
            parts = [src.keys_values(layer, q, k) for src in self.context.sources]
            context_tokens = sum(pk.shape[1] for pk, _ in parts)
            keys, values = self.buffers.get(layer, v, context_tokens + v.shape[1])
            start = 0
            for pk, pv in parts:
                keys[:, start : start + pk.shape[1]].copy_(pk)
                values[:, start : start + pk.shape[1]].copy_(pv)
                start += pk.shape[1]
            self._layers[layer] = (keys, values)
        return self._layers[layer]

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, k, v: [B, S, n, d] of the current block (before RoPE) -> [B, S, n, d]."""
        own = self.context.own_keys_from * (k.shape[1] // len(self.context.frames))
        keys, values = self._layer_buffers(layer, q, k, v[:, own:])
        context_tokens = keys.shape[1] - (k.shape[1] - own)
        q = apply_rope(q, self._query_angles).type_as(v)
        apply_rope(k[:, own:], self._key_angles, out=keys[:, context_tokens:])
        values[:, context_tokens:].copy_(v[:, own:])
        if self.context.causal_frames and self._mask is None:
            self._mask = self._causal_mask(q.shape[1], keys.shape[1], q.device)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2), attn_mask=self._mask)
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
        vars(self).update(vars(attn))  # the same block: its angles, buffers and assembled context are reused
        self.block_kv = BlockKV()

    def attend(self, layer, q, k, v):
        self.block_kv.q.append(q)
        self.block_kv.k.append(k)
        self.block_kv.v.append(v)
        return super().attend(layer, q, k, v)
