"""Which bank entries a block retrieves: cosine top-K of frame descriptors, or a random choice.

The rule is an object built once (pipeline/build.py) from `compression_method`; the memory calls it
without knowing which one it holds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from pipeline.descriptors import FrameDescriptor


@dataclass
class Selection:
    pool_indices: torch.Tensor  # [B, k] long, descending similarity
    similarities: torch.Tensor | None  # [B, k] (None for random retrieval)


def cosine_to_pool(query: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """query: [B, D]; pool: [B, P, D] -> [B, P]; each vector divided by (its norm + 1e-8)."""
    q = query / (query.norm(dim=-1, keepdim=True) + 1e-8)
    p = pool / (pool.norm(dim=-1, keepdim=True) + 1e-8)
    return torch.einsum("bd,bpd->bp", q, p)


def select_top_k(query: torch.Tensor, pool: torch.Tensor, recent_exclude: int, k: int) -> Selection | None:
    """Cosine top-k among pool entries 0 .. P - recent_exclude - 1; None when none is eligible."""
    eligible = pool.shape[1] - recent_exclude
    if eligible <= 0 or k <= 0:
        return None
    sims = cosine_to_pool(query, pool[:, :eligible])
    top = sims.topk(min(k, eligible), dim=1, sorted=True)
    return Selection(top.indices, top.values)


def select_random(batch: int, pool_size: int, recent_exclude: int, k: int, generator: torch.Generator) -> Selection | None:
    """Uniform choice of k distinct eligible entries per sample (the paper's random-retrieval ablation)."""
    eligible = pool_size - recent_exclude
    if eligible <= 0 or k <= 0:
        return None
    picks = [torch.randperm(eligible, generator=generator)[: min(k, eligible)] for _ in range(batch)]
    return Selection(torch.stack(picks), None)


class Retrieval(Protocol):
    name: str  # the config's compression_method, for logs

    def describe(self, frames: torch.Tensor) -> torch.Tensor:
        """frames: [B, F, C, H, W] clean latents -> descriptors [B, F, D]."""

    def select(self, query: torch.Tensor, pool: torch.Tensor, recent_exclude: int, k: int,
               generator: torch.Generator) -> Selection | None:
        """query: [B, D]; pool: [B, P, D] descriptors of the bank -> chosen entries, None if none is eligible."""


class TopKRetrieval:
    """Cosine top-K over descriptors (`ae`: retrieval encoder, `avg_pool`: spatial mean)."""

    def __init__(self, descriptor: FrameDescriptor, name: str):
        self.descriptor, self.name = descriptor, name

    def describe(self, frames: torch.Tensor) -> torch.Tensor:
        """frames: [B, F, C, H, W] -> [B, F, D]."""
        return self.descriptor(frames)

    def select(self, query: torch.Tensor, pool: torch.Tensor, recent_exclude: int, k: int, generator: torch.Generator) -> Selection | None:
        """query: [B, D]; pool: [B, P, D]."""
        return select_top_k(query.to(pool.device), pool, recent_exclude, k)


class RandomRetrieval:
    """The paper's random-retrieval ablation; its descriptors are empty vectors (bank bookkeeping stays uniform)."""

    name = "random"

    def describe(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.new_zeros(frames.shape[0], frames.shape[1], 0, dtype=torch.float32)

    def select(self, query, pool, recent_exclude, k, generator):
        return select_random(pool.shape[0], pool.shape[1], recent_exclude, k, generator)
