"""`native`: sliding window, the sink plus the most recent frames, each at its absolute frame index.

This is LongLive's cache, prompt switches included: at a switch the last min(window, F) generated frames
are re-encoded under the new prompt (pipeline/context/window_recache.py), and with `global_sink` false
the sink slots then hold the first of them, at their own positions.
"""
from __future__ import annotations

from pipeline.context.policy import PolicySetup, write_back
from pipeline.context.window_recache import CleanLatents, SwitchOptions, WindowRecache
from pipeline.prompt_schedule import Block
from wan.block_attention import BlockContext, CachedFrames


class NativePolicy:
    def __init__(self, setup: PolicySetup, window: int, sink_size: int, switch: SwitchOptions = SwitchOptions()):
        self.window, self.sink_size = window, sink_size
        self.rope, self.grid_hw = setup.rope, setup.geometry.grid_hw
        self.cache = setup.geometry.window_cache(window, sink_size)
        self.recache = WindowRecache(switch, setup.clean_pass, setup.rope, setup.geometry.grid_hw, setup.geometry.frames_per_block)

    def begin_block(self, block: Block) -> BlockContext:
        slots = self.cache.admit(block.frames)  # evicts the oldest non-sink frames: native keeps no history
        cached = list(range(slots[0]))  # [sink ‖ most recent frames], each at its frame index
        frames = [self.cache.frame_at(s) for s in cached]
        sources = [CachedFrames(self.cache, cached, frames, self.rope, self.grid_hw)] if cached else []
        positions = list(block.frames)
        return BlockContext(block.frames, sources, positions, positions, slots)

    def switch(self, block: Block, latents: CleanLatents) -> dict:
        first = block.frames[0]
        frames = list(range(max(0, first - self.window), first))
        return self.recache(self.cache, frames, frames, first > self.window, block, latents)

    def before_recache(self, context, x0) -> None:
        pass

    def end_block(self, block, context, x0, kv) -> dict:
        write_back(self.cache, context, kv)
        return {}

    def extras(self) -> dict:
        return {}

    def close(self) -> None:
        pass
