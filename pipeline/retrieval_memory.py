"""The retrieval memory of Algorithm 1: index finished frames, bank evicted ones, retrieve per block."""
from __future__ import annotations

import torch

from pipeline.history_bank import HistoryBank, PendingGather
from pipeline.retrieval import Retrieval, Selection
from wan.block_attention import RetrievedKV


class RetrievalMemory:
    def __init__(self, bank: HistoryBank, retrieval: Retrieval, top_k: int, recent_exclude: int, seed: int = 0):
        self.bank, self.retrieval = bank, retrieval
        self.top_k, self.recent_exclude = top_k, recent_exclude
        self._rng = torch.Generator().manual_seed(seed)
        self._frame_descriptors: list[torch.Tensor] = []  # per block: [B, nf, D]
        self._evicted: list[int] = []  # frames that left the bank since the last log entry
        self._prefetched: tuple[int, Selection | None, PendingGather | None] | None = None
        self._log: list[dict] = []
        # decisions not converted for the log yet: (block start, bank size, evicted frames, selection, frames [B, k])
        self._unread: list[tuple[int, int, list[int], Selection, torch.Tensor]] = []

    @property
    def log(self) -> list[dict]:
        """One entry per retrieval decision. Its device tensors (indices, similarities, frames) become lists
        here, when the log is read (after the block's calls), never while a block's calls are queued."""
        for block_start, num_banked, evicted, sel, frames in self._unread:
            self._log.append({
                "block_start_frame": block_start,
                "query_frame": block_start - 1,
                "num_banked": num_banked,
                "num_eligible": num_banked - self.recent_exclude,
                "selected_pool_indices": sel.pool_indices.tolist(),
                "selected_frames": frames.tolist(),
                "similarities": None if sel.similarities is None else sel.similarities.tolist(),
                "compression_method": self.retrieval.name,
                "evicted_frames": evicted,
            })
        self._unread = []
        return self._log

    def descriptors(self) -> torch.Tensor:
        """[B, F, D] descriptor of every generated frame so far."""
        return torch.cat(self._frame_descriptors, dim=1)

    def index(self, frames: torch.Tensor) -> None:
        """frames: [B, nf, C, H, W] clean x0 of a finished block (before the recache pass)."""
        self._frame_descriptors.append(self.retrieval.describe(frames))

    def bank_frames(self, frames: list[int], k: torch.Tensor, v: torch.Tensor) -> None:
        """Move frames evicted from the window cache (k, v: [L, B, m, T, n, d]) into the bank."""
        desc = self.descriptors()[:, frames].to(self.bank.compute_device)
        self._evicted += self.bank.add(frames, k, v, desc)

    def _select(self, block_start: int) -> Selection | None:
        if block_start == 0 or self.bank.descriptors is None:
            return None
        query = self.descriptors()[:, block_start - 1]
        return self.retrieval.select(query, self.bank.descriptors, self.recent_exclude, self.top_k, self._rng)

    def prefetch(self, block_start: int, dtype: torch.dtype) -> None:
        """Make the retrieval decision of the block starting at `block_start` now (its query frame is
        indexed and the bank is final for it) and start gathering, so the gather overlaps the recache pass."""
        selection = self._select(block_start)
        pending = None if selection is None else self.bank.gather_async(selection.pool_indices, dtype)
        self._prefetched = (block_start, selection, pending)

    def retrieve(self, block_start: int, dtype: torch.dtype) -> tuple[RetrievedKV, torch.Tensor] | None:
        """Retrieval decision for the block starting at `block_start`, made before its first call (or taken
        from `prefetch`).

        The query is the newest finished frame (block_start - 1). -> K/V of the chosen entries and
        their global frame indices [B, k] (on the selection's device), or None when nothing is eligible.
        """
        prefetched, self._prefetched = self._prefetched, None
        if prefetched is not None and prefetched[0] == block_start:
            _, selection, pending = prefetched
        else:
            if prefetched is not None and prefetched[2] is not None:
                prefetched[2].result()  # an unused prefetch still owns the bank's staging buffer until it ends
            selection, pending = self._select(block_start), None
        if selection is None:
            return None
        pool = selection.pool_indices
        frames = torch.tensor(self.bank.frames, device=pool.device)[pool]  # host list -> device once, no read back
        self._record(block_start, selection, frames)
        retrieved = self.bank.gather(selection.pool_indices, dtype) if pending is None else pending.result()
        return retrieved, frames

    def _record(self, block_start: int, sel: Selection, frames: torch.Tensor) -> None:
        self._unread.append((block_start, self.bank.size, self._evicted, sel, frames))
        self._evicted = []
