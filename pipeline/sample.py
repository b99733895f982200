"""One video's latents from (prompt, seed): the shared step of the inference job and corpus generation.

Each video's noise comes from its own generator seeded from (seed, prompt index, sample), so a
video does not depend on how prompts are split across processes or which videos were skipped;
the same generator, on the compute device, continues with the re-noising draws (the noise depends
on the seed and the device type only).
"""
from __future__ import annotations

import hashlib

import torch

from pipeline.build import InferenceComponents
from pipeline.generation_config import GenerationConfig
from pipeline.rollout import NoiseSource, RolloutResult, gaussian_noise, generate
from wan.geometry import LatentGeometry


def sample_seed(seed: int, prompt_index: int, sample: int) -> int:
    """A 63-bit seed that depends only on (seed, prompt index, sample)."""
    digest = hashlib.sha256(f"{seed}/{prompt_index}/{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def initial_noise(seed: int, geometry: LatentGeometry, num_frames: int, device: torch.device) -> tuple[torch.Tensor, NoiseSource]:
    """noise: [1, F, C, H, W] drawn on `device` and the source of the re-noising draws that continues the
    same generator."""
    gen = torch.Generator(device).manual_seed(seed)
    noise = torch.randn((1, num_frames, *geometry.frame_shape), generator=gen, device=device)
    return noise, gaussian_noise(gen)


def sample_video(prompt: str, seed: int, cfg: GenerationConfig, parts: InferenceComponents, progress: bool) -> RolloutResult:
    """The block loop on one prompt line (one segment, or the method's multi-scene syntax);
    result.latents: [1, F, C, H, W] on the compute device."""
    model = parts.generator
    geometry = LatentGeometry.of(model.cfg, cfg.latent_height, cfg.latent_width)
    noise, renoise = initial_noise(seed, geometry, cfg.num_output_frames, model.patch_embedding.weight.device)
    schedule = parts.method.parse_prompt(prompt)
    prompt_embeds = [parts.prompts.encode([text]) for text in schedule.prompts]  # each [1, text_len, text_dim]
    return generate(model, cfg, noise, prompt_embeds, renoise, parts.method.policy, schedule, seed=seed, progress=progress)
