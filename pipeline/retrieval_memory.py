"""The retrieval memory of Algorithm 1: index finished frames, bank evicted ones, retrieve per block.

Across prompt segments the memory follows its switch policy (pipeline/memory_switch.py): at a
boundary, entries that can never be retrieved again leave the bank (and later frames of those
segments are not banked); a retrieved entry whose K/V is stale for the current segment is
re-encoded by `reencode` once per segment, written back into the bank and gathered again.
"""
from __future__ import annotations

from typing import Callable

import torch

from pipeline.history_bank import HistoryBank, PendingGather
from pipeline.memory_switch import MemorySwitchPolicy, ScopedMemory
from pipeline.prompt_schedule import Block
from pipeline.retrieval import Retrieval, Selection
from wan.block_attention import RetrievedKV

# (frame, its clean latent [B, C, H, W], segment) -> its K/V under that segment's prompt, k, v: [L, B, T, n, d]
Reencode = Callable[[int, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


class RetrievalMemory:
    def __init__(self, bank: HistoryBank, retrieval: Retrieval, top_k: int, recent_exclude: int, seed: int = 0,
                 switch: MemorySwitchPolicy = ScopedMemory(), reencode: Reencode | None = None):
        if switch.keeps_latents and (reencode is None or bank.latent_shape is None):
            raise ValueError(f"memory_switch_policy {switch.name} needs a bank that keeps latents and a re-encoder")
        self.bank, self.retrieval, self.switch, self.reencode = bank, retrieval, switch, reencode
        self.top_k, self.recent_exclude = top_k, recent_exclude
        self._rng = torch.Generator().manual_seed(seed)
        self._descriptors: torch.Tensor | None = None  # [B, capacity, D], frames 0 .. _indexed - 1 filled
        self._indexed = 0
        self._frame_segments: list[int] = []  # prompt segment of every generated frame
        self._latents: dict[int, torch.Tensor] = {}  # frame -> [B, C, H, W]: indexed, not banked yet (bank keeps latents)
        self._scene = 0  # the current block's segment
        self._floor = 0  # entries of older segments are never retrieved again
        self._reencoded: set[int] = set()  # frames whose banked K/V were recomputed under the current segment's prompt
        self._evicted: list[int] = []  # frames that left the bank since the last log entry
        self._prefetched: tuple[int, Selection | None, PendingGather | None] | None = None
        self._log: list[dict] = []
        # decisions not converted for the log yet: (block start, segment, bank size, evicted frames, selection,
        # frames [B, k], their segments [B, k], re-encoded frames)
        self._unread: list[tuple] = []

    @property
    def log(self) -> list[dict]:
        """One entry per retrieval decision. Its device tensors (indices, similarities, frames) become lists
        here, when the log is read (after the block's calls), never while a block's calls are queued."""
        for block_start, segment, num_banked, evicted, sel, frames, segments, reencoded in self._unread:
            self._log.append({
                "block_start_frame": block_start,
                "query_frame": block_start - 1,
                "segment": segment,
                "num_banked": num_banked,
                "num_eligible": num_banked - self.recent_exclude,
                "selected_pool_indices": sel.pool_indices.tolist(),
                "selected_frames": frames.tolist(),
                "selected_segments": segments.tolist(),
                "reencoded_frames": reencoded,
                "similarities": None if sel.similarities is None else sel.similarities.tolist(),
                "compression_method": self.retrieval.name,
                "evicted_frames": evicted,
            })
        self._unread = []
        return self._log

    def descriptors(self) -> torch.Tensor:
        """[B, F, D] descriptor of every generated frame so far (a view)."""
        return self._descriptors[:, : self._indexed]

    def index(self, frames: torch.Tensor) -> None:
        """frames: [B, nf, C, H, W] clean x0 of a finished block of the current segment (before the recache pass)."""
        first = len(self._frame_segments)
        self._store_descriptors(self.retrieval.describe(frames))
        self._frame_segments += [self._scene] * frames.shape[1]
        if self.bank.latent_shape is not None:
            for i in range(frames.shape[1]):
                self._latents[first + i] = frames[:, i].float().clone()

    def _store_descriptors(self, desc: torch.Tensor) -> None:
        """desc: [B, nf, D]. Kept in one buffer doubled when full: a view per read instead of concatenating
        every block's descriptors twice per block (quadratic in the video's length)."""
        end = self._indexed + desc.shape[1]
        if self._descriptors is None or end > self._descriptors.shape[1]:
            grown = desc.new_empty(desc.shape[0], max(end, 2 * self._indexed, 16), desc.shape[2])
            if self._descriptors is not None:
                grown[:, : self._indexed] = self.descriptors()
            self._descriptors = grown
        self._descriptors[:, self._indexed : end] = desc
        self._indexed = end

    def enter(self, block: Block) -> None:
        """Called before the block's retrieval: at a segment boundary (a block of another segment than the
        previous one), the entries the switch policy makes ineligible for good leave the bank, and no K/V
        counts as re-encoded for the new segment yet."""
        if block.scene == self._scene:
            return
        self._scene = block.scene
        self._reencoded.clear()
        floor = self.switch.floor(block, self._floor)
        if floor != self._floor:
            self._floor = floor
            self._drop_prefetch()  # it was decided on entries that leave now
            self._evicted += self.bank.drop_segments_before(floor)

    def bank_frames(self, frames: list[int], k: torch.Tensor, v: torch.Tensor) -> None:
        """Move frames evicted from the window cache (k, v: [L, B, m, T, n, d]) into the bank; frames of a
        segment that can no longer be retrieved are dropped instead."""
        latents = [self._latents.pop(f) for f in frames] if self.bank.latent_shape is not None else None
        keep = [i for i, f in enumerate(frames) if self._frame_segments[f] >= self._floor]
        if not keep:
            return
        kept = [frames[i] for i in keep]
        if len(keep) < len(frames):
            k, v = k[:, :, keep], v[:, :, keep]
        desc = self.descriptors()[:, kept].to(self.bank.compute_device)
        stacked = None if latents is None else torch.stack([latents[i] for i in keep], dim=1)  # [B, m, C, H, W]
        self._evicted += self.bank.add(kept, k, v, desc, [self._frame_segments[f] for f in kept], stacked)

    def _select(self, block_start: int) -> Selection | None:
        if block_start == 0 or self.bank.descriptors is None:
            return None
        query = self.descriptors()[:, block_start - 1]
        return self.retrieval.select(query, self.bank.descriptors, self.recent_exclude, self.top_k, self._rng)

    def prefetch(self, block_start: int, dtype: torch.dtype) -> None:
        """Make the retrieval decision of the block starting at `block_start` now (its query frame is
        indexed and the bank is final for it) and start gathering, so the gather overlaps the recache pass."""
        self._drop_prefetch()
        selection = self._select(block_start)
        pending = None if selection is None else self.bank.gather_async(selection.pool_indices, dtype)
        self._prefetched = (block_start, selection, pending)

    def retrieve(self, block_start: int, dtype: torch.dtype) -> tuple[RetrievedKV, torch.Tensor] | None:
        """Retrieval decision for the block starting at `block_start`, made before its first call (or taken
        from `prefetch`).

        The query is the newest finished frame (block_start - 1). -> K/V of the chosen entries and
        their global frame indices [B, k] (on the selection's device), or None when nothing is eligible.
        """
        prefetched = self._prefetched
        if prefetched is not None and prefetched[0] == block_start:
            self._prefetched = None
            _, selection, pending = prefetched
        else:
            self._drop_prefetch()
            selection, pending = self._select(block_start), None
        if selection is None:
            return None
        pool = selection.pool_indices
        # host lists -> device once; nothing is read back here (the log converts when it is read)
        frames = torch.tensor(self.bank.frames, device=pool.device)[pool]
        segments = torch.tensor(self.bank.segments, device=pool.device)[pool]
        retrieved = self.bank.gather(selection.pool_indices, dtype) if pending is None else pending.result()
        reencoded = self._refresh(self.bank.last_pool_indices)
        if reencoded:  # the gather read their old K/V
            retrieved = self.bank.gather(selection.pool_indices, dtype)
        self._record(block_start, selection, frames, segments, reencoded)
        return retrieved, frames

    def _refresh(self, pool: list[list[int]]) -> list[int]:
        """Re-encode the selected entries (pool indices [B][k], as the gather read them on the host) whose K/V
        is stale for the current segment and not yet re-encoded in it; the bank keeps the new K/V. -> their
        frames, oldest first."""
        done = []
        for p in sorted({p for picks in pool for p in picks}):
            frame = self.bank.frames[p]
            if not self.switch.stale(self.bank.segments[p], self._scene) or frame in self._reencoded:
                continue
            self.bank.replace(p, *self.reencode(frame, self.bank.latent(p), self._scene))
            self._reencoded.add(frame)
            done.append(frame)
        return done

    def _drop_prefetch(self) -> None:
        if self._prefetched is not None and self._prefetched[2] is not None:
            self._prefetched[2].result()  # the reader thread may still read the bank: wait before it changes
        self._prefetched = None

    def _record(self, block_start: int, sel: Selection, frames: torch.Tensor, segments: torch.Tensor,
                reencoded: list[int]) -> None:
        self._unread.append((block_start, self._scene, self.bank.size, self._evicted, sel, frames, segments, reencoded))
        self._evicted = []
