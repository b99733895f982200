"""The retrieval memory of Algorithm 1: index finished frames, bank evicted ones, retrieve per block."""
from __future__ import annotations

import torch

from pipeline.descriptors import FrameDescriptor
from pipeline.history_bank import HistoryBank, PendingGather
from pipeline.retrieval import Selection, select_random, select_top_k
from wan.block_attention import RetrievedKV


class RetrievalMemory:
    def __init__(self, bank: HistoryBank, descriptor: FrameDescriptor, method: str, top_k: int, recent_exclude: int, seed: int = 0):
        self.bank, self.descriptor, self.method = bank, descriptor, method
        self.top_k, self.recent_exclude = top_k, recent_exclude
        self._rng = torch.Generator().manual_seed(seed)
        self._frame_descriptors: list[torch.Tensor] = []  # per block: [B, nf, D]
        self._evicted: list[int] = []  # frames that left the bank since the last log entry
        self._prefetched: tuple[int, Selection | None, PendingGather | None] | None = None
        self.log: list[dict] = []

    def descriptors(self) -> torch.Tensor:
        """[B, F, D] descriptor of every generated frame so far."""
        return torch.cat(self._frame_descriptors, dim=1)

    def index(self, frames: torch.Tensor) -> None:
        """frames: [B, nf, C, H, W] clean x0 of a finished block (before the recache pass)."""
        self._frame_descriptors.append(self.descriptor(frames))

    def bank_frames(self, frames: list[int], k: torch.Tensor, v: torch.Tensor) -> None:
        """Move frames evicted from the window cache (k, v: [L, B, m, T, n, d]) into the bank."""
        desc = self.descriptors()[:, frames].to(self.bank.compute_device)
        self._evicted += self.bank.add(frames, k, v, desc)

    def _select(self, query_frame: int) -> Selection | None:
        if self.method == "random":
            return select_random(self.bank.batch, self.bank.size, self.recent_exclude, self.top_k, self._rng)
        pool = self.bank.descriptors
        if pool is None:
            return None
        query = self.descriptors()[:, query_frame].to(pool.device)
        return select_top_k(query, pool, self.recent_exclude, self.top_k)

    def prefetch(self, block_start: int, dtype: torch.dtype) -> None:
        """Make the retrieval decision of the block starting at `block_start` now (its query frame is
        indexed and the bank is final for it) and start gathering, so the gather overlaps the recache pass."""
        selection = self._select(block_start - 1)
        pending = None if selection is None else self.bank.gather_async(selection.pool_indices, dtype)
        self._prefetched = (block_start, selection, pending)

    def retrieve(self, block_start: int, dtype: torch.dtype, pool_indices: torch.Tensor | None = None) -> RetrievedKV | None:
        """Retrieval decision for the block starting at `block_start`, made before its first call (or taken
        from `prefetch`). The query is the newest finished frame (block_start - 1). `pool_indices` ([B, k])
        overrides the decision (used to replay recorded traces)."""
        prefetched, self._prefetched = self._prefetched, None
        if prefetched is not None and prefetched[2] is not None and (pool_indices is not None or prefetched[0] != block_start):
            prefetched[2].result()  # an unused prefetch still owns the bank's staging buffer until it ends
        if pool_indices is not None:
            selection = Selection(pool_indices, None)
            retrieved = self.bank.gather(pool_indices, dtype)
        elif prefetched is not None and prefetched[0] == block_start:
            _, selection, pending = prefetched
            retrieved = None if pending is None else pending.result()
        elif block_start == 0:
            return None
        else:
            selection = self._select(block_start - 1)
            retrieved = None if selection is None else self.bank.gather(selection.pool_indices, dtype)
        if selection is None:
            return None
        self._log(block_start, selection)
        return retrieved

    def _log(self, block_start: int, sel: Selection) -> None:
        frames = torch.tensor(self.bank.frames)[sel.pool_indices.cpu()]
        self.log.append(
            {
                "block_start_frame": block_start,
                "query_frame": block_start - 1,
                "num_banked": self.bank.size,
                "num_eligible": self.bank.size - self.recent_exclude,
                "selected_pool_indices": sel.pool_indices.tolist(),
                "selected_frames": frames.tolist(),
                "similarities": None if sel.similarities is None else sel.similarities.tolist(),
                "compression_method": self.method,
                "evicted_frames": self._evicted,
            }
        )
        self._evicted = []
