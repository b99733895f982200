"""How the attention context of a block is filled: the one protocol every method implements.

At the first block of a new prompt segment the loop first asks the policy to do its switch work
(`switch`). Per block the loop asks the policy for the block's context (`begin_block`: retrieve, evict, flush,
choose attended entries and their RoPE positions) and, after the recache pass, hands it the block's
clean latents and keys/values (`end_block`: write back, index, bank). A method is one file in this
folder; it is chosen once, in pipeline/build.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from pipeline.context.window_recache import CleanLatents, CleanPass
from pipeline.prompt_schedule import Block
from wan.block_attention import BlockContext, BlockKV
from wan.kv_cache import FrameKVCache
from wan.rope import Rope3D


@dataclass(frozen=True)
class CacheGeometry:
    """Sizes of everything a policy stores for one rollout."""

    num_layers: int
    batch: int
    tokens_per_frame: int
    grid_hw: tuple[int, int]
    num_heads: int
    head_dim: int
    num_frames: int  # frames of the whole video
    frames_per_block: int
    device: torch.device
    dtype: torch.dtype
    latent_shape: tuple[int, int, int] | None = None  # (C, H, W) of a latent frame (policies that store latents)

    def window_cache(self, window: int, sink_size: int) -> FrameKVCache:
        return FrameKVCache(self.num_layers, self.batch, window, sink_size, self.tokens_per_frame, self.num_heads,
                            self.head_dim, self.device, self.dtype)


@dataclass(frozen=True)
class PolicySetup:
    """What every policy is built from, per rollout."""

    geometry: CacheGeometry
    rope: Rope3D  # on the compute device
    seed: int  # the video's seed (random retrieval)
    # clean_pass(context, x0, scene): one network call at timestep 0 on x0: [B, n, C, H, W] (n frames =
    # context.frames) attending `context`, conditioned on prompt segment `scene` -> its per-layer K/V
    # (before RoPE). Policies recompute cached keys/values with it (a prompt switch's window recache).
    clean_pass: CleanPass


class ContextPolicy(Protocol):
    def switch(self, block: Block, latents: CleanLatents) -> dict:
        """`block` starts a new prompt segment (block.scene): redo what the old prompt conditioned in the stored
        context (LongLive: recache the window under the new prompt with `clean_pass`; ∞-RoPE: the KV flush).
        latents: the clean latents of the most recent frames. -> the switch event for the context log."""

    def begin_block(self, block: Block) -> BlockContext:
        """Decide the block's context before its first call."""

    def before_recache(self, context: BlockContext, x0: torch.Tensor) -> None:
        """x0: [B, nf, C, H, W] clean latents of the block, before its recache pass: work that may overlap
        that pass (latentmem: index the block, start gathering the next block's retrieval)."""

    def end_block(self, block: Block, context: BlockContext, x0: torch.Tensor, kv: BlockKV) -> dict:
        """x0: [B, nf, C, H, W] clean latents of the block; kv: its recache pass. -> method-specific
        fields of the block's context-log entry ({} if none)."""

    def extras(self) -> dict:
        """Method-specific results for the run's files (e.g. the retrieval log); {} if none."""

    def close(self) -> None:
        """Release what outlives the rollout otherwise (latentmem: the history bank's disk file, reader thread)."""


# -> a fresh policy for one rollout (a policy class with its options bound)
PolicyFactory = Callable[[PolicySetup], ContextPolicy]


def write_back(cache: FrameKVCache, context: BlockContext, kv: BlockKV) -> None:
    """Store the recache pass's keys/values of every layer in the block's cache slots."""
    slots = cache.index(context.slots)
    for layer in range(cache.num_layers):
        cache.write(layer, slots, kv.k[layer], kv.v[layer])


def context_entry(block: Block, context: BlockContext, **extra) -> dict:
    """Context-log entry of one block (batch row 0): its prompt segment (`scene`), attended frames with
    positions and token counts."""
    layout = context.layout(0)
    return {
        "block": block.index, "first_frame": block.frames[0], "scene": block.scene,
        "queries": layout["queries"],
        "keys": [[f, p, n] for f, p, kind, n in layout["keys"] if kind == "cached"],
        **extra,
    }
