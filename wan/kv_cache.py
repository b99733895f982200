"""Window KV cache: keys (before RoPE) and values of the most recent frames, for every layer.

Sink frames keep fixed slots; the other frames share a ring of `window - sink` slots, so a new
frame overwrites the oldest non-sink frame without shifting memory. RoPE is applied on use
(wan/block_attention.py), which lets the same cache serve absolute and window-relative positions.
"""
from __future__ import annotations

import torch


class FrameKVCache:
    def __init__(
        self,
        num_layers: int,
        batch: int,
        window: int,
        sink_size: int,
        tokens_per_frame: int,
        num_heads: int,
        head_dim: int,
        device: torch.device | str,
        dtype: torch.dtype,
    ):
        if not 0 <= sink_size < window:
            raise ValueError(f"sink_size {sink_size} must be in [0, window {window})")
        self.window, self.sink_size = window, sink_size
        shape = (num_layers, batch, window, tokens_per_frame, num_heads, head_dim)
        # k, v: [L, B, window, T, n, d]
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self._frame_in_slot: list[int | None] = [None] * window

    @property
    def num_layers(self) -> int:
        return self.k.shape[0]

    def slot(self, frame: int) -> int:
        if frame < self.sink_size:
            return frame
        return self.sink_size + (frame - self.sink_size) % (self.window - self.sink_size)

    def _slots(self, frames: tuple[int, ...] | list[int]) -> list[int]:
        slots = [self.slot(f) for f in frames]
        for f, s in zip(frames, slots):
            if self._frame_in_slot[s] != f:
                raise KeyError(f"frame {f} is not in the window cache (slot {s} holds {self._frame_in_slot[s]})")
        return slots

    def displaced_by(self, frames: tuple[int, ...] | list[int]) -> list[int]:
        """Frames that writing `frames` would overwrite (the oldest non-sink frames), oldest first."""
        out = []
        for f in frames:
            old = self._frame_in_slot[self.slot(f)]
            if old is not None and old != f:
                out.append(old)
        return sorted(out)

    def read(self, layer: int, frames: tuple[int, ...] | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> k, v: [B, len(frames) * T, n, d] of one layer."""
        idx = torch.tensor(self._slots(frames), device=self.k.device)
        k = self.k[layer].index_select(1, idx)
        v = self.v[layer].index_select(1, idx)
        return k.flatten(1, 2), v.flatten(1, 2)

    def read_all_layers(self, frames: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> k, v: [L, B, len(frames), T, n, d] (for moving frames into the history bank). A view of the
        cache when the frames sit in consecutive slots (the bank copies them before the cache is written
        again; a fresh copy here would cost a page-faulting allocation per block on the CPU)."""
        slots = self._slots(frames)
        if slots == list(range(slots[0], slots[0] + len(slots))):
            return self.k[:, :, slots[0] : slots[-1] + 1], self.v[:, :, slots[0] : slots[-1] + 1]
        idx = torch.tensor(slots, device=self.k.device)
        return self.k.index_select(2, idx), self.v.index_select(2, idx)

    def write(self, layer: int, frames: tuple[int, ...], k: torch.Tensor, v: torch.Tensor) -> None:
        """k, v: [B, len(frames) * T, n, d] before RoPE."""
        slots = [self.slot(f) for f in frames]
        idx = torch.tensor(slots, device=self.k.device)
        self.k[layer].index_copy_(1, idx, k.unflatten(1, (len(frames), -1)).to(self.k.dtype))
        self.v[layer].index_copy_(1, idx, v.unflatten(1, (len(frames), -1)).to(self.v.dtype))
        if layer == self.num_layers - 1:
            for f, s in zip(frames, slots):
                self._frame_in_slot[s] = f

    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2
