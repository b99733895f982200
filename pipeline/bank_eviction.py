"""Which history-bank entry leaves when the bank is at its memory budget (`memory_eviction`).

A policy sees the bank in eviction order (oldest first) and picks one victim among the first
`candidates` entries; the newest entries (the recency guard) are never offered.
  redundant  the candidate whose descriptor is most similar to another kept entry: the bank keeps
             the video's distinct moments and drops near-duplicates (ties: the oldest)
  oldest     the oldest entry: the bank is a sliding window over the evicted frames
  stride     the candidate whose frame index has the fewest trailing zero bits (ties: the oldest):
             the bank keeps every n-th frame, n doubling each time the bank has been thinned out
"""
from __future__ import annotations

from typing import Protocol

import torch



class EvictionPolicy(Protocol):
    def victim(self, frames: list[int], descriptors: torch.Tensor | None, candidates: int) -> int:
        """frames: global frame index of every entry, oldest first; descriptors: [B, P, D] or None.
        -> position (< candidates) of the entry to evict."""


class OldestEviction:
    def victim(self, frames: list[int], descriptors: torch.Tensor | None, candidates: int) -> int:
        return 0


class StrideEviction:
    def victim(self, frames: list[int], descriptors: torch.Tensor | None, candidates: int) -> int:
        levels = [trailing_zeros(f) for f in frames[:candidates]]
        return levels.index(min(levels))


class RedundantEviction:
    def victim(self, frames: list[int], descriptors: torch.Tensor | None, candidates: int) -> int:
        if descriptors is None:
            return 0
        unit = descriptors / (descriptors.norm(dim=-1, keepdim=True) + 1e-8)
        sims = torch.einsum("bpd,bqd->bpq", unit, unit)  # cosine between entries; none is its own duplicate
        sims.diagonal(dim1=1, dim2=2).fill_(float("-inf"))
        redundancy = sims[:, :candidates].amax(dim=2).mean(dim=0)  # [candidates], averaged over samples
        return int(redundancy.argmax())


def trailing_zeros(frame: int) -> int:
    """Trailing zero bits of a frame index; frame 0 is divisible by every stride and is evicted last."""
    return (frame & -frame).bit_length() - 1 if frame else 64


EVICTION_POLICIES: dict[str, type] = {"redundant": RedundantEviction, "oldest": OldestEviction, "stride": StrideEviction}
