"""One live video: the block loop driven one block at a time, each block decoded as soon as it is finished.

The loop is CausalRollout.run_block (context, denoising, recache, write-back), as in pipeline/rollout.py's
`generate`; what a prompt switch does to the caches is CausalRollout.begin_block's business when a block
carries a new scene. A typed prompt is encoded, added to the rollout as a new segment, and conditions
every block from the next one on. The VAE decodes block by block with its causal feature cache carried
over (wan/vae.py StreamingDecode), so the streamed frames are the offline decode of the video so far.

With no typed prompt the latents equal inference.py's first video of the same config (same seed, noise and
loop).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from pipeline.build import LiveComponents
from pipeline.generation_config import GenerationConfig
from pipeline.prompt_schedule import Block, PromptSchedule, Segment
from pipeline.rollout import CausalRollout, RolloutResult
from pipeline.sample import initial_noise, sample_seed
from wan.geometry import LatentGeometry


@dataclass(frozen=True)
class BlockUpdate:
    """One finished block as the page shows it."""

    block: Block
    prompt: str  # the segment's text that conditioned the block
    video: torch.Tensor  # [T, 3, H, W] in [-1, 1] on the CPU: the block's decoded frames
    context: dict  # the block's context-log entry (pipeline/context/policy.py context_entry)
    denoise_ms: float  # context, denoising steps and recache pass
    decode_ms: float  # the streaming VAE decode of the block


def video_seed(cfg: GenerationConfig) -> int:
    """The seed of inference.py's first video (prompt 0, sample 0) of the same config."""
    return sample_seed(cfg.seed, 0, 0)


class LiveSession:
    """State of one live video; not thread-safe: one thread calls every method."""

    def __init__(self, parts: LiveComponents, cfg: GenerationConfig, prompt: str):
        self.parts, self.cfg = parts, cfg
        self.seed = video_seed(cfg)
        model = parts.generator
        geometry = LatentGeometry.of(model.cfg, cfg.latent_height, cfg.latent_width)
        # [1, F, C, H, W] on the compute device; the re-noising draws continue its generator there
        self.noise, self.renoise = initial_noise(self.seed, geometry, cfg.num_output_frames, model.patch_embedding.weight.device)
        _, num_frames, c, h, w = self.noise.shape
        self.layout = PromptSchedule.single(prompt).blocks(num_frames, cfg.num_frame_per_block)  # frames of each block
        self.segments = [Segment(prompt, 0)]
        self.rollout = CausalRollout(parts.generator, cfg, parts.method.policy, [self.encode(prompt)], (c, h, w),
                                     num_frames, self.seed)
        self.latents = torch.empty(self.noise.shape, dtype=torch.float32, device=self.rollout.device)
        self.chunks: list[torch.Tensor] = []  # [T_i, 3, H, W] decoded blocks, in order
        self.ms_per_block: list[float] = []
        self.decode_ms: list[float] = []
        self.pending: str | None = None  # the prompt of the next block's new segment
        self.pending_cut = False  # that segment starts with a hard cut
        self.stream = parts.vae.stream().start()
        self.closed = False

    def encode(self, prompt: str) -> torch.Tensor:
        """-> [1, text_len, text_dim] embeddings of one prompt."""
        return self.parts.text_encoder.encode([prompt])

    @property
    def prompt(self) -> str:
        return self.segments[-1].prompt

    @property
    def blocks_done(self) -> int:
        return len(self.ms_per_block)

    @property
    def done(self) -> bool:
        return self.blocks_done == len(self.layout)

    def set_prompt(self, prompt: str, cut: bool = False) -> None:
        """Condition every block from the next one on `prompt` (the last one set before that block wins); with
        `cut`, a hard cut into a new scene (as `#` in a schedule): the method's cut, and retrieval memory
        never retrieves a frame from before it. The playing prompt without a cut starts nothing."""
        text = prompt.strip()
        if not text:
            raise ValueError("the prompt is empty; type a description of the scene")
        new = cut or text != self.prompt
        self.pending, self.pending_cut = (text, cut) if new else (None, False)

    def next_block(self) -> Block:
        """The next block, starting a new segment when a prompt is pending."""
        planned = self.layout[self.blocks_done]
        if self.pending is None:
            return Block(planned.index, planned.frames, len(self.segments) - 1, boundary=False, cut=False)
        scene = self.rollout.add_prompt(self.encode(self.pending))
        self.segments.append(Segment(self.pending, planned.index, self.pending_cut))
        self.pending, self.pending_cut = None, False
        return Block(planned.index, planned.frames, scene, boundary=True, cut=self.segments[-1].cut)

    @torch.no_grad()  # grad mode is per thread: the server steps the session in its worker thread
    def step(self) -> BlockUpdate:
        """Generate and decode the next block."""
        if self.done or self.closed:
            raise RuntimeError(f"the video is finished ({len(self.layout)} blocks); start a new session")
        block = self.next_block()
        rollout, first, end = self.rollout, block.frames[0], block.frames[-1] + 1
        start = time.perf_counter()
        x0 = rollout.run_block(block, self.noise[:, first:end], self.renoise)
        self.latents[:, first:end] = x0
        self._synchronize()
        denoised = time.perf_counter()
        video = self.stream.decode(x0)[0].float().cpu()  # [T, 3, H, W]
        decoded = time.perf_counter()
        self.chunks.append(video)
        self.ms_per_block.append((denoised - start) * 1000)
        self.decode_ms.append((decoded - denoised) * 1000)
        return BlockUpdate(block, self.segments[block.scene].prompt, video, rollout.context_log[-1],
                           self.ms_per_block[-1], self.decode_ms[-1])

    def _synchronize(self) -> None:
        if self.rollout.device.type == "cuda":
            torch.cuda.synchronize(self.rollout.device)

    def result(self) -> RolloutResult:
        """The video so far: latents [1, F_done, C, H, W] and the logs of its blocks."""
        frames = self.blocks_done * self.cfg.num_frame_per_block
        return RolloutResult(latents=self.latents[:, :frames], context_log=list(self.rollout.context_log),
                             extras=self.rollout.policy.extras(), ms_per_block=list(self.ms_per_block),
                             segments=[s.prompt for s in self.segments])

    def close(self) -> None:
        """Release the policy's resources and the VAE's stream (the VAE serves one stream at a time)."""
        if not self.closed:
            self.closed = True
            self.stream.close()
            self.rollout.policy.close()
