"""`latentmem` (LongLive-RAG): [sink ‖ K retrieved ‖ local] with window-relative positions.

Frames leaving the window go to the history bank; before each block the K bank entries most similar
to the newest frame (outside the R most recent) are spliced in, all at temporal position 0. Which
entries stay eligible across prompt segments, and whether an old entry is re-encoded under the new
prompt, is the memory switch policy's decision (pipeline/memory_switch.py).
"""
from __future__ import annotations

import torch

from pipeline.context.policy import PolicySetup, write_back
from pipeline.context.window_recache import CleanLatents, SwitchOptions, WindowRecache
from pipeline.history_bank import build_history_bank
from pipeline.memory_switch import MemorySwitchPolicy
from pipeline.prompt_schedule import Block
from pipeline.retrieval import Retrieval
from pipeline.retrieval_memory import RetrievalMemory
from pipeline.rollout_config import ModelKwargs
from utils.dtypes import resolve_dtype
from wan.block_attention import BlockContext, CachedFrames, RetrievedFrames
from wan.context_layout import block_layout


class LatentMemPolicy:
    def __init__(self, setup: PolicySetup, window: int, sink_size: int, memory_size: int, recent_exclude: int,
                 retrieval: Retrieval, bank: ModelKwargs, memory_switch: MemorySwitchPolicy,
                 switch: SwitchOptions = SwitchOptions()):
        """bank: the history bank's settings (memory_device / dtype / budget_gb / eviction / folder / prefetch);
        memory_switch: what the memory may retrieve after a prompt switch; switch: the window recache at a switch."""
        g = setup.geometry
        self.window, self.sink_size, self.memory_size = window, sink_size, memory_size
        self.rope, self.grid_hw, self.dtype = setup.rope, g.grid_hw, g.dtype
        self.num_frames, self.prefetch = g.num_frames, bank.memory_prefetch
        self.clean_pass = setup.clean_pass
        self.cache = g.window_cache(window, sink_size)
        if memory_switch.keeps_latents and g.latent_shape is None:
            raise ValueError(f"memory_switch_policy {memory_switch.name} stores latents: the cache geometry needs latent_shape")
        history, self.bank_choice = build_history_bank(
            bank, g.num_layers, g.batch, g.tokens_per_frame, g.num_heads, g.head_dim, g.num_frames, g.device,
            resolve_dtype(bank.memory_dtype, g.dtype), g.latent_shape if memory_switch.keeps_latents else None)
        self.memory = RetrievalMemory(history, retrieval, memory_size, recent_exclude, setup.seed, memory_switch,
                                      self.reencode)
        self.recache = WindowRecache(switch, setup.clean_pass, setup.rope, g.grid_hw, g.frames_per_block)

    def reencode(self, frame: int, latent: torch.Tensor, scene: int) -> tuple[torch.Tensor, torch.Tensor]:
        """K/V of a banked frame recomputed from its clean latent ([B, C, H, W]) under segment `scene`'s prompt, at
        t = 0 with [sink ‖ entry] as context: the sink at its positions, the entry right after it, as in a two-frame
        video. -> k, v: [L, B, T, n, d]."""
        sink = list(range(min(self.sink_size, self.cache.length)))
        sources = [CachedFrames.of_frames(self.cache, sink, sink, self.rope, self.grid_hw)] if sink else []
        position = [len(sink)]
        kv = self.clean_pass(BlockContext((frame,), sources, position, position), latent[:, None], scene)
        return torch.stack(kv.k), torch.stack(kv.v)

    def switch(self, block: Block, latents: CleanLatents) -> dict:
        """LongLive's window recache of every cached frame, at the window-relative positions the last block gave them."""
        first = block.frames[0]
        shift = max(0, first - self.window)
        frames = self.cache.frames
        positions = [f if f < self.sink_size else f - shift for f in frames]
        return self.recache(self.cache, frames, positions, first > self.window, block, latents)

    def begin_block(self, block: Block) -> BlockContext:
        first = block.frames[0]
        self.memory.enter(block)
        retrieved = self.memory.retrieve(first, self.dtype)
        layout = block_layout(first, len(block.frames), self.window, self.sink_size, self.memory_size,
                              num_retrieved=retrieved[0].num_frames if retrieved else 0, window_positions=True)
        # frames leaving the window are banked after this block's retrieval decision, so a block never
        # retrieves what it evicts itself
        evicted = self.cache.overflow(len(block.frames))
        if evicted:
            self.memory.bank_frames([self.cache.frame_at(s) for s in evicted], *self.cache.read_all_layers(evicted))
        slots = self.cache.admit(block.frames)
        sources = []
        if layout.sink_frames:
            sources.append(CachedFrames.of_frames(self.cache, layout.sink_frames, layout.sink_positions, self.rope, self.grid_hw))
        if retrieved:
            sources.append(RetrievedFrames(retrieved[0], retrieved[1], layout.retrieved_position, self.rope, self.grid_hw))
        if layout.local_frames:
            sources.append(CachedFrames.of_frames(self.cache, layout.local_frames, layout.local_positions, self.rope, self.grid_hw))
        positions = list(layout.current_positions)
        return BlockContext(block.frames, sources, positions, positions, slots)

    def before_recache(self, context, x0) -> None:
        self.memory.index(x0)
        # the next block's query frame is indexed now and the bank only changes after its decision, so
        # its gather can run during this block's recache pass
        following = context.frames[-1] + 1
        if self.prefetch and following < self.num_frames:
            self.memory.prefetch(following, self.dtype)

    def end_block(self, block, context, x0, kv) -> dict:
        write_back(self.cache, context, kv)
        decisions = self.memory.log
        retrieval = decisions[-1] if decisions and decisions[-1]["block_start_frame"] == block.frames[0] else None
        return {"num_banked": self.memory.bank.size, "retrieval": retrieval}

    def extras(self) -> dict:
        memory = self.memory
        return {"retrieval_log": memory.log, "descriptors": memory.descriptors(), "kv_gathers": memory.bank.num_gathers,
                "history_bank": self.bank_choice, "memory_switch_policy": memory.switch.name}

    def close(self) -> None:
        self.memory.bank.close()
