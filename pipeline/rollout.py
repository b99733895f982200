"""The autoregressive block loop (paper Algorithm 1).

For each block of frames: retrieve (latentmem only), assemble the [sink ‖ retrieved ‖ local]
context, denoise N steps, index the clean frames, move frames leaving the window into the
history bank, and run the clean recache pass that writes the block into the window cache.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from tqdm.auto import tqdm

from pipeline.descriptors import FrameDescriptor
from pipeline.history_bank import HistoryBank
from pipeline.retrieval_memory import RetrievalMemory
from pipeline.rollout_config import ModelKwargs, RolloutConfig
from pipeline.scheduler import FlowMatchSchedule
from utils.dtypes import resolve_dtype
from wan.block_attention import BlockAttention
from wan.context_layout import block_layout
from wan.geometry import LatentGeometry
from wan.kv_cache import FrameKVCache
from wan.model import CausalWanModel, TextContext
from wan.rope import Rope3D

NoiseSource = Callable[[torch.Size], torch.Tensor]


def gaussian_noise(generator: torch.Generator) -> NoiseSource:
    """Standard-normal draws on the CPU from `generator` (identical on every device)."""
    return lambda shape: torch.randn(shape, generator=generator)


@dataclass
class RolloutResult:
    latents: torch.Tensor  # [B, F, C, H, W] clean latents
    retrieval_log: list[dict] = field(default_factory=list)
    descriptors: torch.Tensor | None = None  # [B, F, D] (latentmem only)
    ms_per_block: list[float] = field(default_factory=list)
    kv_gathers: int = 0


class CausalRollout:
    """State of one rollout: window cache, optional retrieval memory, prompt context."""

    def __init__(
        self,
        model: CausalWanModel,
        cfg: RolloutConfig,
        prompt_embeds: torch.Tensor,
        latent_shape: tuple[int, int, int],
        num_frames: int,
        descriptor: FrameDescriptor | None = None,
        memory_seed: int = 0,
    ):
        """prompt_embeds: [B, L, text_dim]; latent_shape: (C, H, W) of one latent frame."""
        self.model, self.cfg = model, cfg
        self.device, self.dtype = model.patch_embedding.weight.device, model.compute_dtype
        mcfg, mk = model.cfg, cfg.model_kwargs
        self.geometry = LatentGeometry.of(mcfg, latent_shape[1], latent_shape[2])
        tokens = self.geometry.tokens_per_frame
        batch = prompt_embeds.shape[0]
        self.schedule = FlowMatchSchedule(mk.timestep_shift)
        self.step_timesteps = self.schedule.step_timesteps(cfg.denoising_step_list, cfg.warp_denoising_step)
        self.rope = Rope3D(mcfg.head_dim, mcfg.rope_max_positions, self.device)
        self.cache = FrameKVCache(mcfg.num_layers, batch, mk.local_attn_size, mk.sink_size, tokens, mcfg.num_heads, mcfg.head_dim, self.device, self.dtype)
        with torch.no_grad():
            self.text: TextContext = model.encode_text(prompt_embeds.to(self.device))
        self.memory = self._build_memory(mk, descriptor, batch, num_frames, memory_seed)

    def _build_memory(self, mk: ModelKwargs, descriptor: FrameDescriptor | None, batch: int, num_frames: int,
                      seed: int) -> RetrievalMemory | None:
        """The retrieval memory of a latentmem run (None for native runs): the one place `use_latentmem` is read."""
        if not mk.use_latentmem:
            return None
        if descriptor is None:
            raise ValueError(f"use_latentmem with compression_method '{mk.compression_method}' needs a descriptor")
        mcfg = self.model.cfg
        storage = self.device if mk.memory_device == "auto" else torch.device(mk.memory_device)
        bank = HistoryBank(
            mcfg.num_layers, batch, self.geometry.tokens_per_frame, mcfg.num_heads, mcfg.head_dim,
            capacity=max(num_frames - mk.local_attn_size, 1),
            storage_device=storage, storage_dtype=resolve_dtype(mk.memory_dtype, self.dtype), compute_device=self.device,
        )
        return RetrievalMemory(bank, descriptor, mk.compression_method, mk.memory_size, mk.recent_exclude, seed)

    def begin_block(self, first_frame: int, pool_indices: torch.Tensor | None = None) -> BlockAttention:
        """Retrieval decision + context of the block starting at `first_frame`."""
        mk = self.cfg.model_kwargs
        retrieved = self.memory.retrieve(first_frame, self.dtype, pool_indices) if self.memory else None
        layout = block_layout(
            first_frame, self.cfg.num_frame_per_block, mk.local_attn_size, mk.sink_size,
            memory_size=mk.reserved_memory_frames,
            num_retrieved=retrieved.num_frames if retrieved is not None else 0,
            window_positions=self.memory is not None,
        )
        return BlockAttention(self.cache, layout, self.rope, self.geometry.grid_hw, retrieved)

    @torch.no_grad()
    def predict_x0(self, attn: BlockAttention, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """One network call. x: [B, nf, C, H, W]; timestep: [B, nf] -> x0 prediction (x's dtype)."""
        flow = self.model(x.to(self.device), timestep.to(self.device), self.text, attn)
        return self.schedule.flow_to_x0(flow, x.to(self.device), timestep)

    @torch.no_grad()
    def finish_block(self, attn: BlockAttention, x0: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        """Index the clean block, bank the frames it displaces, run the recache pass (its output is returned)."""
        frames = attn.layout.current_frames
        displaced = self.cache.displaced_by(frames)
        if self.memory is not None:
            self.memory.index(x0)
            if displaced:
                self.memory.bank_frames(displaced, *self.cache.read_all_layers(displaced))
        t = torch.full(x0.shape[:2], float(self.cfg.context_noise), device=self.device)
        x = x0 if self.cfg.context_noise == 0 else self.schedule.renoise(x0, noise(x0.shape).to(x0.device), t)
        attn.write_cache = True
        return self.predict_x0(attn, x, t)

    @torch.no_grad()
    def denoise_block(self, attn: BlockAttention, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        """N few-step denoising calls from x: [B, nf, C, H, W] pure noise -> clean x0."""
        steps = self.step_timesteps
        for i, t in enumerate(steps):
            timestep = torch.full(x.shape[:2], float(t), device=self.device)
            x0 = self.predict_x0(attn, x, timestep)
            if i + 1 < len(steps):
                x = self.schedule.renoise(x0, noise(x0.shape).to(x0.device), torch.full_like(timestep, float(steps[i + 1])))
        return x0


def generate(
    model: CausalWanModel,
    cfg: RolloutConfig,
    noise: torch.Tensor,
    prompt_embeds: torch.Tensor,
    renoise: NoiseSource,
    descriptor: FrameDescriptor | None = None,
    memory_seed: int = 0,
    progress: bool = False,
) -> RolloutResult:
    """Generate all frames of `noise` ([B, F, C, H, W]) block by block."""
    b, num_frames, c, h, w = noise.shape
    nf = cfg.num_frame_per_block
    if num_frames % nf:
        raise ValueError(f"{num_frames} frames is not a multiple of num_frame_per_block {nf}")
    rollout = CausalRollout(model, cfg, prompt_embeds, (c, h, w), num_frames, descriptor, memory_seed)
    out = torch.empty(noise.shape, dtype=torch.float32, device=rollout.device)
    timings = []
    for first in tqdm(range(0, num_frames, nf), desc="blocks", disable=not progress, leave=False):
        start = time.perf_counter()
        attn = rollout.begin_block(first)
        x0 = rollout.denoise_block(attn, noise[:, first : first + nf].to(rollout.device), renoise)
        out[:, first : first + nf] = x0
        rollout.finish_block(attn, x0, renoise)
        if rollout.device.type == "cuda":
            torch.cuda.synchronize(rollout.device)
        timings.append((time.perf_counter() - start) * 1000)
    memory = rollout.memory
    return RolloutResult(
        latents=out,
        retrieval_log=memory.log if memory else [],
        descriptors=memory.descriptors() if memory else None,
        ms_per_block=timings,
        kv_gathers=memory.bank.num_gathers if memory else 0,
    )
