"""One video's latents from (prompt, seed): the shared step of the inference job and corpus generation.

Each video's noise comes from its own generator seeded from (seed, prompt index, sample), so a
video does not depend on how prompts are split across processes or which videos were skipped;
the same generator continues with the re-noising draws.
"""
from __future__ import annotations

import hashlib

import torch

from pipeline.build import InferenceComponents
from pipeline.generation_config import GenerationConfig
from pipeline.rollout import RolloutResult, gaussian_noise, generate


def sample_seed(seed: int, prompt_index: int, sample: int) -> int:
    """A 63-bit seed that depends only on (seed, prompt index, sample)."""
    digest = hashlib.sha256(f"{seed}/{prompt_index}/{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def initial_noise(seed: int, cfg: GenerationConfig, channels: int) -> tuple[torch.Tensor, torch.Generator]:
    """noise: [1, F, C, H, W] on the CPU (identical on every device) and the generator that continues
    with the re-noising draws."""
    gen = torch.Generator().manual_seed(seed)
    shape = (1, cfg.num_output_frames, channels, cfg.latent_height, cfg.latent_width)
    return torch.randn(shape, generator=gen), gen


def sample_video(prompt: str, seed: int, cfg: GenerationConfig, parts: InferenceComponents, progress: bool) -> RolloutResult:
    """The block loop on one prompt line (one segment, or the method's multi-scene syntax);
    result.latents: [1, F, C, H, W] on the compute device."""
    noise, gen = initial_noise(seed, cfg, parts.generator.cfg.in_dim)
    schedule = parts.method.parse_prompt(prompt)
    prompt_embeds = [parts.prompts.encode([text]) for text in schedule.prompts]  # each [1, text_len, text_dim]
    return generate(parts.generator, cfg, noise, prompt_embeds, gaussian_noise(gen), parts.method.policy, schedule,
                    seed=seed, progress=progress)
