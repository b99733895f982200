"""Which videos a corpus holds: the prompt sample, each video's fixed position, id and seed.

The sample and the positions depend only on (prompts, sample_ratio, seed), never on the number
of processes: every rank computes the same list and takes every world_size-th position, so the
union of the shards is the one-process corpus. A video's noise seed is the one inference.py
gives the same prompt line (`sample_seed(seed, prompt line, 0)`), so a corpus video equals the
latents inference.py saves for that prompt with the same settings.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from pipeline.sample import sample_seed


def sample_prompt_indices(num_prompts: int, sample_ratio: float, seed: int) -> list[int]:
    """Sorted prompt line indices of the sample: max(1, int(num_prompts * sample_ratio)) of them,
    drawn like the reference (`random.seed(seed); sorted(random.sample(range(N), k))`)."""
    if num_prompts < 1:
        raise ValueError("no prompts to sample from")
    k = min(num_prompts, max(1, int(num_prompts * sample_ratio)))
    return sorted(random.Random(seed).sample(range(num_prompts), k))


@dataclass(frozen=True)
class LatentJob:
    position: int  # place in the sorted sample; names the video and picks its rank
    prompt_index: int  # line of the prompt in the prompt list
    prompt: str
    seed: int  # noise seed

    @property
    def video_id(self) -> str:
        return f"latent_{self.position:06d}"


def latent_jobs(prompts: list[str], sample_ratio: float, seed: int) -> list[LatentJob]:
    """Every video of the corpus, in position order."""
    indices = sample_prompt_indices(len(prompts), sample_ratio, seed)
    return [LatentJob(pos, i, prompts[i], sample_seed(seed, i, 0)) for pos, i in enumerate(indices)]
