"""`native`: sliding window, the sink plus the most recent frames, each at its absolute frame index."""
from __future__ import annotations

from pipeline.context.policy import PolicySetup, write_back
from pipeline.prompt_schedule import Block
from wan.block_attention import BlockContext, CachedFrames
from wan.context_layout import block_layout


class NativePolicy:
    def __init__(self, setup: PolicySetup, window: int, sink_size: int):
        self.window, self.sink_size = window, sink_size
        self.rope, self.grid_hw = setup.rope, setup.geometry.grid_hw
        self.cache = setup.geometry.window_cache(window, sink_size)

    def begin_block(self, block: Block) -> BlockContext:
        layout = block_layout(block.frames[0], len(block.frames), self.window, self.sink_size, memory_size=0,
                              num_retrieved=0, window_positions=False)
        slots = self.cache.admit(block.frames)  # evicts the oldest non-sink frames: native keeps no history
        regions = [(layout.sink_frames, layout.sink_positions), (layout.local_frames, layout.local_positions)]
        sources = [CachedFrames.of_frames(self.cache, f, p, self.rope, self.grid_hw) for f, p in regions if f]
        positions = list(layout.current_positions)
        return BlockContext(block.frames, sources, positions, positions, slots)

    def before_recache(self, context, x0) -> None:
        pass

    def end_block(self, block, context, x0, kv) -> dict:
        write_back(self.cache, context, kv)
        return {}

    def extras(self) -> dict:
        return {}

    def close(self) -> None:
        pass
