"""History bank H = (H_ctx, H_v): evicted frames' per-layer K/V and their retrieval descriptors.

K/V live in one preallocated tensor per bank (grown by doubling when full), on the compute device
or in pinned host memory, in a configurable dtype. Pool index i always holds the i-th evicted
frame. Retrieved entries are gathered with one batched copy for all layers.
"""
from __future__ import annotations

import torch

from wan.block_attention import RetrievedKV


class HistoryBank:
    def __init__(
        self,
        num_layers: int,
        batch: int,
        tokens_per_frame: int,
        num_heads: int,
        head_dim: int,
        capacity: int,
        storage_device: torch.device | str,
        storage_dtype: torch.dtype,
        compute_device: torch.device | str,
    ):
        self.storage_device = torch.device(storage_device)
        self.compute_device = torch.device(compute_device)
        self._pin = self.storage_device.type == "cpu" and self.compute_device.type == "cuda"
        self._frame_shape = (num_layers, 2, batch, tokens_per_frame, num_heads, head_dim)
        self.dtype = storage_dtype
        # kv: [L, 2 (k, v), B, capacity, T, n, d]
        self.kv = self._allocate(max(capacity, 1))
        self.descriptors: torch.Tensor | None = None  # [B, capacity, D] on the compute device
        self.frames: list[int] = []  # global frame index of every pool entry
        self.num_gathers = 0
        self._copy_done: torch.cuda.Event | None = None

    def _allocate(self, capacity: int) -> torch.Tensor:
        l, two, b, t, n, d = self._frame_shape
        return torch.empty((l, two, b, capacity, t, n, d), dtype=self.dtype, device=self.storage_device, pin_memory=self._pin)

    @property
    def size(self) -> int:
        return len(self.frames)

    @property
    def capacity(self) -> int:
        return self.kv.shape[3]

    def bytes_per_frame(self) -> int:
        return self.kv[:, :, :, 0].numel() * self.kv.element_size()

    def nbytes(self) -> int:
        return self.kv.numel() * self.kv.element_size()

    def _grow(self, needed: int) -> None:
        new = self._allocate(max(needed, 2 * self.capacity))
        new[:, :, :, : self.size].copy_(self.kv[:, :, :, : self.size])
        self.kv = new
        if self.descriptors is not None:
            grown = self.descriptors.new_zeros(self.descriptors.shape[0], new.shape[3], self.descriptors.shape[2])
            grown[:, : self.size] = self.descriptors[:, : self.size]
            self.descriptors = grown

    def add(self, frames: list[int], k: torch.Tensor, v: torch.Tensor, descriptors: torch.Tensor | None) -> None:
        """k, v: [L, B, m, T, n, d] for the evicted `frames`; descriptors: [B, m, D] or None."""
        m, start = len(frames), self.size
        if start + m > self.capacity:
            self._grow(start + m)
        # copy_ makes a real copy even when the source is a view of the window cache
        self.kv[:, 0, :, start : start + m].copy_(k, non_blocking=self._pin)
        self.kv[:, 1, :, start : start + m].copy_(v, non_blocking=self._pin)
        if self._pin:
            self._copy_done = torch.cuda.Event()
            self._copy_done.record()
        if descriptors is not None:
            if self.descriptors is None:
                self.descriptors = descriptors.new_zeros(descriptors.shape[0], self.capacity, descriptors.shape[2])
            self.descriptors[:, start : start + m] = descriptors
        self.frames.extend(frames)

    def gather(self, pool_indices: torch.Tensor, dtype: torch.dtype) -> RetrievedKV:
        """pool_indices: [B, k] -> K/V of those entries on the compute device, [L, B, k, T, n, d]."""
        if self._copy_done is not None:
            self._copy_done.synchronize()
        self.num_gathers += 1
        idx = pool_indices.to(self.storage_device)
        batch = torch.arange(idx.shape[0], device=self.storage_device).unsqueeze(1)
        picked = self.kv[:, :, batch, idx]  # [L, 2, B, k, T, n, d], one gather for all layers
        if self._pin:
            picked = picked.pin_memory()
        picked = picked.to(self.compute_device, dtype, non_blocking=self._pin)
        return RetrievedKV(k=picked[:, 0], v=picked[:, 1])
