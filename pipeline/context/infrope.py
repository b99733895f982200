"""`infrope` (∞-RoPE, arXiv 2511.20649): block-relativistic positions, KV flush and RoPE cut.

Reproduces the official code (yesiltepe-hidir/infinity-rope @ 63d7b84) as measured by the
fixtures (tests/fixtures/infrope/README.md):

- The window cache holds up to `window` frames; every call attends all of them, the key in logical
  slot s at temporal position s. The block's queries sit at their frame index while that is below
  the window, then at the last `nf` positions (window - nf ..).
- At every prompt boundary (KV flush): logical slots 1, 2 receive a copy of the last two slots of
  the window buffer and the cache keeps 3 slots. The next scene's text conditions the block.
- At a hard cut (RoPE cut): for the first block of the scene, the block's queries and own keys sit
  at `cut_position` .. (45, 46, 47); cached keys keep their slot positions.

Quirks of the official code are the defaults; each one that is a bug has a named option:
- `flush_newest`: the flush copies the two newest *valid* frames (official: the last two buffer
  slots, stale or zero while the window is not full).
- `flush_after_sink`: the copies go after the sink (official: into slots 1, 2, overwriting the
  second sink frame at sink 2).
- which boundary cuts is decided when parsing the prompt line (pipeline/prompt_schedule.py,
  `cut_from_ending_scene`).
With one prompt none of this fires: the attended set is native's, at window-relative positions.
"""
from __future__ import annotations

from pipeline.context.policy import PolicySetup, write_back
from pipeline.context.window_recache import CleanLatents
from pipeline.prompt_schedule import Block
from wan.block_attention import BlockContext, CachedFrames

FLUSH_KEEP = 2  # frames the official flush keeps after the sink ("sink + last frame" in the abstract)


class InfRopePolicy:
    def __init__(self, setup: PolicySetup, window: int, sink_size: int, cut_position: int = 45,
                 flush_newest: bool = False, flush_after_sink: bool = False):
        self.window, self.sink_size, self.cut_position = window, sink_size, cut_position
        self.flush_newest, self.flush_after_sink = flush_newest, flush_after_sink
        self.rope, self.grid_hw = setup.rope, setup.geometry.grid_hw
        self.cache = setup.geometry.window_cache(window, sink_size)

    def flush(self) -> None:
        """KV flush: keep the sink plus copies of FLUSH_KEEP frames."""
        cache = self.cache
        end = cache.length if self.flush_newest else cache.window
        first = self.sink_size if self.flush_after_sink else 1
        if end - FLUSH_KEEP < first:  # nothing beyond the sink to keep yet
            return
        cache.copy(list(range(end - FLUSH_KEEP, end)), list(range(first, first + FLUSH_KEEP)))
        cache.truncate(first + FLUSH_KEEP)

    def switch(self, block: Block, latents: CleanLatents) -> dict:
        """∞-RoPE's own switch: the KV flush (no recache; the cut, if any, is the block's positions)."""
        self.flush()
        return {"flush": True, "kept_frames": self.cache.frames}

    def begin_block(self, block: Block) -> BlockContext:
        first, nf = block.frames[0], len(block.frames)
        slots = self.cache.admit(block.frames)
        cached = list(range(slots[0]))
        start = first if first < self.window else self.window - nf
        queries = list(range(start, start + nf))
        keys = list(slots)
        if block.cut:
            queries = keys = list(range(self.cut_position, self.cut_position + nf))
        sources = [CachedFrames(self.cache, cached, cached, self.rope, self.grid_hw)] if cached else []
        return BlockContext(block.frames, sources, queries, keys, slots)

    def before_recache(self, context, x0) -> None:
        pass

    def end_block(self, block, context, x0, kv) -> dict:
        write_back(self.cache, context, kv)
        return {"flush": block.boundary, "cut": block.cut}

    def extras(self) -> dict:
        return {}

    def close(self) -> None:
        pass
