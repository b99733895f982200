"""LongLive's KV recache at a prompt switch: the window cache's frames re-encoded under the new prompt.

Measured on the official code (tests/fixtures/longlive_switch/README.md): before the first block of a
new segment, one clean call at timestep 0 runs on the clean latents of the frames to recache (LongLive:
the last min(window, F) generated frames), conditioned on the new prompt, and its keys/values replace
the cached ones. The sink:

- `global_sink` and the window already full: the sink keeps its K/V (first prompt, for the whole video).
  The first `sink_size` recached frames are queries only: their keys are neither attended nor stored.
- otherwise the cache is reset and every recached frame is written in order, so the first
  `sink_size` of them become the sink (LongLive: frames R .. R+s-1 at their own positions).

Quirks of the official code are the defaults; each one that is a bug has a named option:
- `causal`: the recache call is block-causal (official: the mask is built but unused, every recached
  frame attends the later ones).
- `global_sink_always`: `global_sink` also keeps the sink at a switch before the window is full
  (official: protected only once the window is full, so an early switch rewrites the sink).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from pipeline.prompt_schedule import Block
from wan.block_attention import BlockContext, BlockKV, CachedFrames
from wan.kv_cache import FrameKVCache
from wan.rope import Rope3D


@dataclass(frozen=True)
class SwitchOptions:
    kv_recache: bool = True  # recompute the window's K/V under the new prompt (false: keep the old K/V)
    global_sink: bool = True  # the sink keeps the first prompt's K/V (false: rewritten from the recache)
    global_sink_always: bool = False  # ... also at a switch before the window is full (official: not then)
    causal: bool = False  # block-causal recache call (official: unmasked)

    def keeps_sink(self, window_full: bool) -> bool:
        return self.global_sink and (window_full or self.global_sink_always)


class CleanLatents:
    """Clean latents of the first `first` frames (a sink) and of the most recent `capacity` frames: what a
    switch's recache re-encodes."""

    def __init__(self, capacity: int, first: int):
        self.capacity, self.first = capacity, first
        self._frames: dict[int, torch.Tensor] = {}

    def add(self, frames: tuple[int, ...], x0: torch.Tensor) -> None:
        """x0: [B, len(frames), C, H, W]."""
        for i, f in enumerate(frames):
            self._frames[f] = x0[:, i]
        for f in sorted(self._frames)[: -self.capacity]:
            if f >= self.first:
                del self._frames[f]

    def __call__(self, frames: list[int]) -> torch.Tensor:
        """-> [B, len(frames), C, H, W]."""
        missing = [f for f in frames if f not in self._frames]
        if missing:
            raise KeyError(f"frames {missing} are not among the {self.capacity} most recent clean frames {sorted(self._frames)}")
        return torch.stack([self._frames[f] for f in frames], 1)


# (context, x0: [B, n, C, H, W], scene) -> per-layer K/V: PolicySetup.clean_pass
CleanPass = Callable[[BlockContext, torch.Tensor, int], BlockKV]


@dataclass
class WindowRecache:
    options: SwitchOptions
    clean_pass: CleanPass
    rope: Rope3D
    grid_hw: tuple[int, int]
    frames_per_block: int

    def __call__(self, cache: FrameKVCache, frames: list[int], positions: list[int], window_full: bool, block: Block,
                 latents: CleanLatents) -> dict:
        """Re-encode `frames` (oldest first, at temporal `positions`) into `cache` under `block.scene`'s prompt.
        `window_full`: the official sink protection applies. -> the switch event for the context log."""
        s = cache.sink_size
        keep = s > 0 and self.options.keeps_sink(window_full)

        def sink_frames() -> list[int]:
            return [cache.frame_at(i) for i in range(min(s, cache.length))]

        if not self.options.kv_recache or len(frames) <= (s if keep else 0):
            return {"recached_frames": [], "sink": "kept", "sink_frames": sink_frames()}
        if keep:
            skip = min(s, len(frames))
            sink = list(range(min(s, cache.length)))
            # a kept sink was only ever written at frames 0 .. s-1, and every method places those at their index
            sources = [CachedFrames(cache, sink, [cache.frame_at(i) for i in sink], self.rope, self.grid_hw)]
            slots = cache.slots_of(frames[skip:])
        else:
            skip, sources = 0, []
            cache.truncate(0)
            slots = cache.admit(frames)
        context = BlockContext(tuple(frames), sources, list(positions), list(positions), slots, own_keys_from=skip,
                               causal_frames=self.frames_per_block if self.options.causal else 0)
        kv = self.clean_pass(context, latents(frames), block.scene)
        tokens = kv.k[0].shape[1] // len(frames)
        for layer in range(cache.num_layers):
            cache.write(layer, slots, kv.k[layer][:, skip * tokens:], kv.v[layer][:, skip * tokens:])
        return {"recached_frames": frames[skip:], "sink": "kept" if keep else "rewritten", "sink_frames": sink_frames()}
