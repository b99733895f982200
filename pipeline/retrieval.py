"""Top-K retrieval over the history bank with a recency guard."""
from __future__ import annotations

from dataclasses import dataclass

import torch


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
