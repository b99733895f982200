"""History bank H = (H_ctx, H_v): evicted frames' per-layer K/V and their retrieval descriptors.

Entries are kept in eviction order (pool index i = the i-th oldest entry still banked; without a
budget, the i-th evicted frame) with the global frame index of each in `frames` and the prompt
segment it was generated in in `segments` (pipeline/memory_switch.py); with `latent_shape`, also
its clean latent (float32, on the tier's device; host memory for the disk tier), to re-encode it. K/V live in a
frame-major slab storage (pipeline/bank_storage.py) on the tier the config chose, encoded by a
codec (pipeline/bank_codec.py: a float dtype, or float8 with per-head scales). With a budget
(`max_frames`), banking into a full bank first evicts an entry chosen by the eviction policy
(pipeline/bank_eviction.py) outside the recency guard. The K selected entries of a block are read
in one gather (one staging buffer, one transfer), dequantised on the compute device.
"""
from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from pipeline.bank_codec import make_codec
from pipeline.bank_eviction import EVICTION_POLICIES, EvictionPolicy
from pipeline.bank_storage import GB, SlabStorage, Tier, choose_tier
from pipeline.rollout_config import ModelKwargs
from utils.config import ConfigError
from wan.block_attention import RetrievedKV

NEW = -1  # slot of an entry not stored yet


class PendingGather:
    """A gather started ahead of its block (prefetch); `result()` makes it usable on the compute stream and
    frees the bank for changes again."""

    def __init__(self, future: Future, bank: HistoryBank):
        self._future = future  # -> (RetrievedKV, CUDA event after which it is ready, or None)
        self._bank = bank

    def result(self) -> RetrievedKV:
        try:
            out, event = self._future.result()
        finally:
            if self._bank._pending is self:
                self._bank._pending = None
        if event is not None:
            stream = torch.cuda.current_stream(out.k.device)
            stream.wait_event(event)
            out.k.record_stream(stream)  # k and v share one allocation, made on the reading stream
        return out


class HistoryBank:
    def __init__(
        self,
        num_layers: int,
        batch: int,
        tokens_per_frame: int,
        num_heads: int,
        head_dim: int,
        tier: Tier,
        storage_dtype: torch.dtype,
        compute_device: torch.device | str,
        max_frames: int | None = None,
        eviction: EvictionPolicy | None = None,
        recent_guard: int = 0,
        latent_shape: tuple[int, int, int] | None = None,
    ):
        """latent_shape: (C, H, W) of a latent frame when every entry keeps its clean latent, else None."""
        if max_frames is not None and max_frames <= recent_guard:
            raise ValueError(f"a bank of {max_frames} frames cannot keep the recency guard of {recent_guard} frames plus one")
        if max_frames is not None and eviction is None:
            raise ValueError("a bank with max_frames needs an eviction policy")
        self.compute_device = torch.device(compute_device)
        self.batch = batch
        self.codec = make_codec(storage_dtype)
        self.dtype = storage_dtype
        slab_shape = (batch, num_layers, 2, tokens_per_frame, num_heads, head_dim)  # one frame: [B, L, 2, T, n, d]
        self.storage = SlabStorage(tier, slab_shape, storage_dtype, self.compute_device, max_frames)
        self.max_frames, self.eviction, self.recent_guard = max_frames, eviction, recent_guard
        self.latent_shape = latent_shape
        self.frames: list[int] = []  # global frame index of every entry, oldest first
        self.segments: list[int] = []  # prompt segment of every entry (non-decreasing)
        self._slots: list[int] = []  # storage slot of every entry
        self._free: list[int] = []  # slots of evicted entries, reused first
        self._slots_used = 0
        self._desc: torch.Tensor | None = None  # [B, capacity, D] on the compute device
        self._scale: torch.Tensor | None = None  # [slots, B, L, 2, n] float32 (float8 codec)
        self._latents: torch.Tensor | None = None  # [slots, B, C, H, W] float32 (with latent_shape)
        self.num_gathers = 0
        self.last_pool_indices: list[list[int]] = []  # [B][k] of the last gather, as read on the host
        self._outputs: list[torch.Tensor | None] = [None, None]  # see _output
        self._turn = 0
        self._reader: ThreadPoolExecutor | None = None
        self._pending: PendingGather | None = None  # a gather whose result() was not taken yet
        self._read_stream = torch.cuda.Stream(self.compute_device) if self.compute_device.type == "cuda" else None

    @property
    def size(self) -> int:
        return len(self.frames)

    @property
    def descriptors(self) -> torch.Tensor | None:
        """[B, size, D] descriptor of every entry in pool order."""
        return None if self._desc is None else self._desc[:, : self.size]

    def bytes_per_frame(self) -> int:
        """Bytes one banked frame takes on its tier (K/V payload, plus its scales for float8 and its latent)."""
        b, l, _, t, n, d = self.storage.slab_shape
        return frame_bytes(l, b, t, n, d, self.dtype, self.latent_shape)

    def nbytes(self) -> int:
        """Bytes allocated on the tier now (grows chunk by chunk with the video, up to the budget)."""
        return self.storage.capacity * self.bytes_per_frame()

    def add(self, frames: list[int], k: torch.Tensor, v: torch.Tensor, descriptors: torch.Tensor | None,
            segments: list[int] | None = None, latents: torch.Tensor | None = None) -> list[int]:
        """k, v: [L, B, m, T, n, d] for the evicted `frames`; descriptors: [B, m, D] or None; segments: the prompt
        segment of each frame (None: all segment 0, a one-prompt video); latents: [B, m, C, H, W] clean latents
        (exactly when the bank keeps them).
        -> frames that left the bank to stay within the budget (possibly some of `frames`)."""
        if (latents is None) != (self.latent_shape is None):
            raise ValueError(f"a bank with latent_shape {self.latent_shape} needs latents exactly when it keeps them")
        self._check_idle("add")
        k, v, scale = self.codec.encode(k, v)  # [L, B, m, T, n, d] in the storage dtype; [m, B, L, 2, n] or None
        evicted = []
        for i, frame in enumerate(frames):
            self._append_entry(frame, 0 if segments is None else segments[i], None if descriptors is None else descriptors[:, i])
            if self.max_frames is not None and self.size > self.max_frames:
                evicted.append(self._evict(self.eviction.victim(self.frames, self.descriptors, self.size - self.recent_guard)))
            if self._slots[-1] == NEW:  # the new entry stayed: it takes a freed slot or the next one
                self._slots[-1] = self._free.pop() if self._free else self._next_slot()
                self._store(self._slots[-1], k[:, :, i], v[:, :, i], None if scale is None else scale[i])
                if latents is not None:  # [B, C, H, W] float32 on the tier's device
                    latent = latents[:, i].to(device=self.storage.tier.device, dtype=torch.float32)
                    self._latents = self._put_row(self._latents, self._slots[-1], latent)
        return evicted

    def drop_segments_before(self, segment: int) -> list[int]:
        """Remove every entry of a segment older than `segment` (they can never be retrieved again).
        -> their frames, oldest first."""
        self._check_idle("drop_segments_before")
        dropped = []
        while self.segments and self.segments[0] < segment:  # segments are non-decreasing in pool order
            dropped.append(self._evict(0))
        return dropped

    def replace(self, position: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """New K/V of the entry at pool `position` (re-encoded under another prompt); k, v: [L, B, T, n, d]."""
        self._check_idle("replace")
        k, v, scale = self.codec.encode(k[:, :, None], v[:, :, None])
        self._store(self._slots[position], k[:, :, 0], v[:, :, 0], None if scale is None else scale[0])

    def latent(self, position: int) -> torch.Tensor:
        """Clean latent of the entry at pool `position`: [B, C, H, W] float32 on the compute device."""
        if self._latents is None:
            raise ValueError("this history bank keeps no latents (it was built without latent_shape)")
        return self._latents[self._slots[position]].to(self.compute_device)

    def _put_row(self, table: torch.Tensor | None, slot: int, row: torch.Tensor) -> torch.Tensor:
        """`row` stored as `table[slot]` (a per-slot table [slots, *row.shape] in row's dtype and device), the
        table first grown by doubling, never past the budget's slots. -> the table."""
        if table is None or table.shape[0] <= slot:
            rows = max(slot + 1, 2 * (0 if table is None else table.shape[0]))
            if self.max_frames is not None:
                rows = min(rows, self.max_frames)
            grown = row.new_zeros(rows, *row.shape)
            if table is not None:
                grown[: table.shape[0]] = table
            table = grown
        table[slot] = row
        return table

    def _append_entry(self, frame: int, segment: int, desc: torch.Tensor | None) -> None:
        """desc: [B, D]. The entry gets its slot after the eviction decision, so the bank never needs more
        than `max_frames` slots."""
        if desc is not None:
            if self._desc is None:
                self._desc = desc.new_zeros(desc.shape[0], 16, desc.shape[1], device=self.compute_device)
            if self.size == self._desc.shape[1]:
                grown = self._desc.new_zeros(self._desc.shape[0], 2 * self.size, self._desc.shape[2])
                grown[:, : self.size] = self._desc
                self._desc = grown
            self._desc[:, self.size] = desc.to(self._desc.device)
        if self.segments and segment < self.segments[-1]:
            raise ValueError(f"frame {frame} of segment {segment} banked after an entry of segment {self.segments[-1]}")
        self.frames.append(frame)
        self.segments.append(segment)
        self._slots.append(NEW)

    def _evict(self, position: int) -> int:
        frame, slot = self.frames.pop(position), self._slots.pop(position)
        self.segments.pop(position)
        if self._desc is not None:
            self._desc[:, position : self.size] = self._desc[:, position + 1 : self.size + 1].clone()
        if slot != NEW:
            self._free.append(slot)
        return frame

    def _next_slot(self) -> int:
        self._slots_used += 1
        return self._slots_used - 1

    def _store(self, slot: int, k: torch.Tensor, v: torch.Tensor, scale: torch.Tensor | None) -> None:
        """k, v: [L, B, T, n, d] encoded; scale: [B, L, 2, n] or None."""
        self.storage.write(slot, k, v)
        if scale is not None:
            self._scale = self._put_row(self._scale, slot, scale)

    def gather(self, pool_indices: torch.Tensor, dtype: torch.dtype) -> RetrievedKV:
        """pool_indices: [B, k] -> K/V of those entries on the compute device, [L, B, k, T, n, d] in `dtype`.
        Reads the indices on the host at once (a wait for the device): call it outside a block's calls."""
        self._check_idle("gather")
        return self._gather(pool_indices.tolist(), dtype)

    def _check_idle(self, what: str) -> None:
        """The reader thread reads the bank's slots, storage and output buffers without a lock: nothing may
        change them, or start another gather, until the pending gather's result() is taken."""
        if self._pending is not None:
            raise RuntimeError(f"HistoryBank.{what} while a gather is pending: take its result() first")

    def _gather(self, idx: list[list[int]], dtype: torch.dtype) -> RetrievedKV:
        """idx: [B][k] pool indices -> as `gather`."""
        self.num_gathers += 1
        self.last_pool_indices = idx
        rows = [(self._slots[p], b) for b, picks in enumerate(idx) for p in picks]
        payload = self.storage.read(rows)  # B * k slabs [L, 2, T, n, d]
        scale = None
        if self.codec.has_scale:
            slots = self._to_device([[self._slots[p] for p in picks] for picks in idx], self._scale.device)
            scale = self._scale[slots, torch.arange(len(idx), device=slots.device)[:, None]]  # [B, k, L, 2, n]
        kv = self.codec.decode(payload, scale, self._output(len(idx), len(idx[0]), dtype))  # [L, 2, B, k, T, n, d]
        return RetrievedKV(k=kv[:, 0], v=kv[:, 1])

    def _output(self, batch: int, k: int, dtype: torch.dtype) -> torch.Tensor:
        """One of two reused output buffers, alternating: block t reads one while the prefetch for block t + 1
        fills the other. (A fresh 10-100 MB tensor per block costs its page faults again on the CPU.)"""
        _, l, two, t, n, d = self.storage.slab_shape
        shape = (l, two, batch, k, t, n, d)
        self._turn ^= 1
        buf = self._outputs[self._turn]
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self._outputs[self._turn] = torch.empty(shape, dtype=dtype, device=self.compute_device)
        return buf

    def gather_async(self, pool_indices: torch.Tensor, dtype: torch.dtype) -> PendingGather:
        """Start `gather` and return at once, reading nothing on the host here: the indices are copied to
        pinned host memory without blocking, and the bank's reader thread waits for that copy (not the
        compute thread, which queues its next calls meanwhile), then reads the slabs: from accelerator
        memory on a side CUDA stream, from host memory or disk into one staged transfer. The bank must not
        change until `result()` (it refuses to)."""
        self._check_idle("gather_async")
        if self._reader is None:
            self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history-bank-reader")
        inference = torch.is_inference_mode_enabled()  # thread-local: the reader writes buffers made here
        if self._read_stream is None:  # a CPU run: the indices are in host memory already
            future = self._reader.submit(self._gather_from_host, pool_indices, dtype, inference)
        else:
            host = torch.empty(pool_indices.shape, dtype=pool_indices.dtype, pin_memory=True)
            host.copy_(pool_indices, non_blocking=True)
            # after this point of the compute stream the indices are on the host and the banked slabs are final
            ready = torch.cuda.current_stream(self.compute_device).record_event()
            future = self._reader.submit(self._gather_on_read_stream, host, ready, dtype, inference)
        self._pending = PendingGather(future, self)
        return self._pending

    def _gather_from_host(self, host_indices: torch.Tensor, dtype: torch.dtype,
                          inference: bool) -> tuple[RetrievedKV, None]:
        with torch.inference_mode(inference):
            return self._gather(host_indices.tolist(), dtype), None

    def _gather_on_read_stream(self, host_indices: torch.Tensor, ready: torch.cuda.Event, dtype: torch.dtype,
                               inference: bool) -> tuple[RetrievedKV, torch.cuda.Event]:
        ready.synchronize()  # this reader thread waits; the compute thread does not
        with torch.inference_mode(inference), torch.cuda.stream(self._read_stream):
            out = self._gather(host_indices.tolist(), dtype)
        return out, self._read_stream.record_event()

    @staticmethod
    def _to_device(values: list, device: torch.device) -> torch.Tensor:
        """Host values -> a tensor on `device`, through pinned memory without blocking on CUDA."""
        if device.type != "cuda":
            return torch.tensor(values, device=device)
        return torch.tensor(values, pin_memory=True).to(device, non_blocking=True)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.shutdown(wait=True)
            self._reader = None
        self.storage.close()


def frame_bytes(num_layers: int, batch: int, tokens_per_frame: int, num_heads: int, head_dim: int, dtype: torch.dtype,
                latent_shape: tuple[int, int, int] | None = None) -> int:
    """Bytes of one banked frame: K and V of every layer, plus a float32 scale per (sample, layer, k|v, head)
    for float8, plus its float32 clean latent (C, H, W) per sample when the bank keeps latents."""
    payload = 2 * num_layers * batch * tokens_per_frame * num_heads * head_dim * dtype.itemsize
    latent = 0 if latent_shape is None else batch * math.prod(latent_shape) * 4
    return payload + (2 * num_layers * batch * num_heads * 4 if make_codec(dtype).has_scale else 0) + latent


def bank_capacity(cfg: ModelKwargs, num_frames: int, per_frame: int) -> tuple[int | None, int]:
    """-> (the budget in frames, None without one; the most frames the bank of a `num_frames` video holds).
    Every frame that leaves the window is banked; a budget caps them."""
    banked = max(num_frames - cfg.local_attn_size, 1)
    if cfg.memory_budget_gb is None:
        return None, banked
    max_frames = math.floor(cfg.memory_budget_gb * GB / per_frame)
    if max_frames <= cfg.recent_exclude:
        raise ConfigError(
            f"model_kwargs.memory_budget_gb {cfg.memory_budget_gb} holds {max_frames} banked frames of {per_frame / 1e6:.4g} MB; "
            f"the recency guard (recent_exclude {cfg.recent_exclude}) needs at least {cfg.recent_exclude + 1}: "
            f"set memory_budget_gb >= {(cfg.recent_exclude + 1) * per_frame / GB:.4g}")
    return max_frames, min(banked, max_frames)


def build_history_bank(cfg: ModelKwargs, num_layers: int, batch: int, tokens_per_frame: int, num_heads: int,
                       head_dim: int, num_frames: int, compute: torch.device, dtype: torch.dtype,
                       latent_shape: tuple[int, int, int] | None = None) -> tuple[HistoryBank, str]:
    """The bank of one rollout of `num_frames` frames as the config asks (dtype, budget, policy, tier), keeping
    every entry's clean latent of `latent_shape` (C, H, W) when given; -> (bank, which tier and why)."""
    per_frame = frame_bytes(num_layers, batch, tokens_per_frame, num_heads, head_dim, dtype, latent_shape)
    max_frames, held = bank_capacity(cfg, num_frames, per_frame)
    choice = choose_tier(cfg.memory_device, cfg.memory_folder, held * per_frame, compute)
    bank = HistoryBank(num_layers, batch, tokens_per_frame, num_heads, head_dim, choice.tier, dtype, compute,
                       max_frames=max_frames, eviction=EVICTION_POLICIES[cfg.memory_eviction](),
                       recent_guard=cfg.recent_exclude, latent_shape=latent_shape)
    budget = "no budget" if max_frames is None else f"budget {max_frames} frames ({cfg.memory_budget_gb} GB, {cfg.memory_eviction} eviction)"
    return bank, f"history bank on {choice.tier.name} ({choice.reason}); {per_frame / 1e6:.2f} MB per frame, {budget}"
