"""The autoregressive block loop (paper Algorithm 1).

For each block of frames: the context policy retrieves / evicts / flushes and assembles the block's
context, N denoising steps run, the clean recache pass computes the block's keys and values, and the
policy writes them back and indexes the block. Which method fills the context is the policy's
business (pipeline/context/); the loop is the same for all.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from tqdm.auto import tqdm

from pipeline.context.policy import CacheGeometry, ContextPolicy, PolicyFactory, PolicySetup, context_entry
from pipeline.context.window_recache import CleanLatents
from pipeline.prompt_schedule import Block, PromptSchedule
from pipeline.rollout_config import RolloutConfig
from pipeline.scheduler import FlowMatchSchedule
from wan.block_attention import BlockAttention, BlockContext, BlockKV, ContextBuffers, RecachePass
from wan.geometry import LatentGeometry
from wan.model import CausalWanModel, TextContext
from wan.rope import Rope3D

NoiseSource = Callable[[torch.Size], torch.Tensor]  # shape -> a draw on the compute device


def gaussian_noise(generator: torch.Generator) -> NoiseSource:
    """Standard-normal draws from `generator`, made on its device (the compute device's generator: no
    host-to-device copy per step; the stream depends only on the seed and the device type)."""
    return lambda shape: torch.randn(shape, generator=generator, device=generator.device)


@dataclass
class RolloutResult:
    latents: torch.Tensor  # [B, F, C, H, W] clean latents
    context_log: list[dict] = field(default_factory=list)  # per block: attended frames and positions
    extras: dict = field(default_factory=dict)  # method-specific (latentmem: retrieval_log, descriptors, kv_gathers, history_bank)
    ms_per_block: list[float] = field(default_factory=list)
    segments: list[str] = field(default_factory=list)  # prompt of each segment (context_log's `scene` indexes it)


class CausalRollout:
    """State of one rollout: the context policy and the text context of every prompt segment."""

    def __init__(
        self,
        model: CausalWanModel,
        cfg: RolloutConfig,
        policy_factory: PolicyFactory,
        prompt_embeds: list[torch.Tensor],
        latent_shape: tuple[int, int, int],
        num_frames: int,
        seed: int = 0,
    ):
        """prompt_embeds: one [B, L, text_dim] per prompt segment; latent_shape: (C, H, W) of one latent frame."""
        self.model, self.cfg = model, cfg
        self.device, self.dtype = model.patch_embedding.weight.device, model.compute_dtype
        mcfg = model.cfg
        self.geometry = LatentGeometry.of(mcfg, latent_shape[1], latent_shape[2])
        self.grid_hw = self.geometry.grid_hw
        self.schedule = FlowMatchSchedule(cfg.model_kwargs.timestep_shift)
        # Python floats: a timestep never travels between host and device
        self.step_timesteps: list[float] = self.schedule.step_timesteps(cfg.denoising_step_list, cfg.warp_denoising_step).tolist()
        self.rope = Rope3D(mcfg.head_dim, mcfg.rope_max_positions, self.device)
        self.buffers = ContextBuffers()
        # one graph per call type (denoising step, recache pass): dynamic shapes from the start, so the window
        # filling up does not recompile
        self.compiled = torch.compile(model, dynamic=True) if cfg.compile else None
        geometry = CacheGeometry(mcfg.num_layers, prompt_embeds[0].shape[0], self.geometry.tokens_per_frame, self.grid_hw,
                                 mcfg.num_heads, mcfg.head_dim, num_frames, cfg.num_frame_per_block, self.device, self.dtype,
                                 tuple(latent_shape))
        with torch.no_grad():
            self.texts: list[TextContext] = [model.encode_text(p.to(self.device)) for p in prompt_embeds]
        self.scene, self.text = 0, self.texts[0]
        self.policy: ContextPolicy = policy_factory(PolicySetup(geometry, self.rope, seed, self.clean_pass))
        self.latents = CleanLatents(cfg.model_kwargs.local_attn_size, cfg.model_kwargs.sink_size)  # what a switch re-encodes
        self.context_log: list[dict] = []
        self.switch_event: dict | None = None  # the current block's, for its log entry

    def begin_block(self, block: Block) -> BlockAttention:
        """The block's context (retrieval, eviction, flush: the policy's decisions) and its prompt.

        A block whose segment differs from the previous block's is a prompt switch, whoever builds the blocks
        (the schedule or a live driver): see `switch_prompt`."""
        self.switch_event = self.switch_prompt(block) if block.scene != self.scene else None
        return BlockAttention(self.policy.begin_block(block), self.rope, self.grid_hw, self.buffers)

    def switch_prompt(self, block: Block) -> dict:
        """From here on every call is conditioned on the new segment's cross-attention K/V, and the policy first
        redoes what the old prompt conditioned in its context. -> the switch event for the block's log entry."""
        previous, self.scene, self.text = self.scene, block.scene, self.texts[block.scene]
        event = self.policy.switch(block, self.latents)
        return {"block": block.index, "first_frame": block.frames[0], "segment": block.scene,
                "previous_segment": previous, "cut": block.cut, **event}

    def add_prompt(self, prompt_embeds: torch.Tensor) -> int:
        """A new prompt segment (prompt_embeds: [B, L, text_dim]), e.g. typed while generating -> its scene index."""
        with torch.no_grad():
            self.texts.append(self.model.encode_text(prompt_embeds.to(self.device)))
        return len(self.texts) - 1

    @torch.no_grad()
    def predict_x0(self, attn: BlockAttention, x: torch.Tensor, t: float, text: TextContext | None = None) -> torch.Tensor:
        """One network call at timestep `t` for every frame. x: [B, nf, C, H, W] on the compute device -> x0
        prediction (x's dtype). text: the conditioning (default: the current block's prompt)."""
        forward = self.compiled if self.compiled is not None and attn.compilable else self.model
        flow = forward(x, torch.full(x.shape[:2], t, device=x.device), self.text if text is None else text, attn)
        return self.schedule.flow_to_x0(flow, x, t)

    @torch.no_grad()
    def clean_call(self, context: BlockContext, x0: torch.Tensor, scene: int) -> tuple[torch.Tensor, BlockKV]:
        """One call at timestep 0 on x0: [B, n, C, H, W] attending `context`, conditioned on segment `scene`
        -> (its x0 prediction, its per-layer K/V)."""
        recache = RecachePass(BlockAttention(context, self.rope, self.grid_hw))
        return self.predict_x0(recache, x0, 0.0, self.texts[scene]), recache.block_kv

    def clean_pass(self, context: BlockContext, x0: torch.Tensor, scene: int) -> BlockKV:
        """PolicySetup.clean_pass: the K/V of `clean_call`."""
        return self.clean_call(context, x0, scene)[1]

    @torch.no_grad()
    def denoise_block(self, attn: BlockAttention, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        """N few-step denoising calls from x: [B, nf, C, H, W] pure noise -> clean x0."""
        steps = self.step_timesteps
        for i, t in enumerate(steps):
            x0 = self.predict_x0(attn, x, t)
            if i + 1 < len(steps):
                x = self.schedule.renoise(x0, noise(x0.shape), steps[i + 1])
        return x0

    @torch.no_grad()
    def recache(self, attn: BlockAttention, x0: torch.Tensor, noise: NoiseSource) -> tuple[torch.Tensor, BlockKV]:
        """The clean pass at timestep `context_noise` -> (its x0, discarded by the loop; the block's K/V).
        The policy's work that may overlap it (latentmem: the next block's prefetch) starts first."""
        t = float(self.cfg.context_noise)
        x = x0 if self.cfg.context_noise == 0 else self.schedule.renoise(x0, noise(x0.shape), t)
        self.policy.before_recache(attn.context, x0)
        recache = RecachePass(attn)
        return self.predict_x0(recache, x, t), recache.block_kv

    @torch.no_grad()
    def run_block(self, block: Block, noise: torch.Tensor, renoise: NoiseSource, clean: torch.Tensor | None = None) -> torch.Tensor:
        """One whole block: its context, N denoising calls from `noise` ([B, nf, C, H, W]) or the given `clean`
        frames (an opening), the recache pass and the write-back -> the block's clean latents [B, nf, C, H, W]."""
        attn = self.begin_block(block)
        x0 = self.denoise_block(attn, noise, renoise) if clean is None else clean
        _, kv = self.recache(attn, x0, renoise)
        self.end_block(block, attn, x0, kv)
        return x0

    def end_block(self, block: Block, attn: BlockAttention, x0: torch.Tensor, kv: BlockKV) -> None:
        """Write the block back into the context state and index it (the policy's decisions); log its context."""
        extra = self.policy.end_block(block, attn.context, x0, kv)
        self.latents.add(block.frames, x0)
        self.context_log.append(context_entry(block, attn.context, switch=self.switch_event, **extra))


def generate(
    model: CausalWanModel,
    cfg: RolloutConfig,
    noise: torch.Tensor,
    prompt_embeds: torch.Tensor | list[torch.Tensor],
    renoise: NoiseSource,
    policy_factory: PolicyFactory,
    schedule: PromptSchedule | None = None,
    seed: int = 0,
    progress: bool = False,
    opening: torch.Tensor | None = None,
) -> RolloutResult:
    """Generate all frames of `noise` ([B, F, C, H, W]) block by block.

    prompt_embeds: [B, L, text_dim], or one such tensor per segment of `schedule` (default: one segment).
    `opening` ([B, F0, C, H, W] clean frames, F0 a multiple of the block size) replaces the first F0
    frames: they are cached, indexed and banked like generated frames (a ground-truth opening).
    """
    b, num_frames, c, h, w = noise.shape
    nf = cfg.num_frame_per_block
    if num_frames % nf:
        raise ValueError(f"{num_frames} frames is not a multiple of num_frame_per_block {nf}")
    num_opening = 0 if opening is None else opening.shape[1]
    if num_opening % nf or num_opening > num_frames:
        raise ValueError(f"opening of {num_opening} frames must be a multiple of num_frame_per_block {nf} and at most {num_frames}")
    embeds = [prompt_embeds] if isinstance(prompt_embeds, torch.Tensor) else list(prompt_embeds)
    schedule = schedule or PromptSchedule.single("")
    if len(embeds) != len(schedule.segments):
        raise ValueError(f"{len(embeds)} prompt embeddings for a schedule of {len(schedule.segments)} segments")
    rollout = CausalRollout(model, cfg, policy_factory, embeds, (c, h, w), num_frames, seed)
    out = torch.empty(noise.shape, dtype=torch.float32, device=rollout.device)
    noise = noise.to(rollout.device)  # moved once, not per block
    opening = None if opening is None else opening.to(rollout.device, torch.float32)
    timings = []
    try:
        for block in tqdm(schedule.blocks(num_frames, nf), desc="blocks", disable=not progress, leave=False):
            start = time.perf_counter()
            first, end = block.frames[0], block.frames[-1] + 1
            given = opening[:, first:end] if first < num_opening else None
            out[:, first:end] = rollout.run_block(block, noise[:, first:end], renoise, given)
            if rollout.device.type == "cuda":
                torch.cuda.synchronize(rollout.device)
            timings.append((time.perf_counter() - start) * 1000)
    finally:
        rollout.policy.close()
    return RolloutResult(latents=out, context_log=rollout.context_log, extras=rollout.policy.extras(), ms_per_block=timings,
                         segments=schedule.prompts)
