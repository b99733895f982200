"""Window KV cache: keys (before RoPE) and values of up to `window` frames, for every layer.

Frames are addressed by *logical slot*: slots 0 .. sink-1 hold the sink, the following slots the
other frames oldest first, `length` slots are valid. A logical slot points at a physical slot that
never moves, so evicting the oldest non-sink frames is bookkeeping, not a copy of the cache. Slots
past `length` keep their last contents (stale frames, or zeros if never written): ∞-RoPE's KV
flush reads them, as the official code does. RoPE is applied on use (wan/block_attention.py), so
the same cache serves absolute, window-relative and re-assigned positions.
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
        # k, v: [L, B, window (physical slots), T, n, d]
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self._physical = list(range(window))  # physical slot of every logical slot
        self._frames: list[int | None] = [None] * window  # frame held by every logical slot (None: zeros)
        self.length = 0

    @property
    def num_layers(self) -> int:
        return self.k.shape[0]

    @property
    def frames(self) -> list[int | None]:
        """Frame held by each valid logical slot."""
        return self._frames[: self.length]

    def frame_at(self, slot: int) -> int | None:
        return self._frames[slot]

    def slots_of(self, frames: tuple[int, ...] | list[int]) -> list[int]:
        """Logical slots of `frames` (each must be held by exactly one valid slot)."""
        held = self.frames
        slots = []
        for f in frames:
            if held.count(f) != 1:
                raise KeyError(f"frame {f} is not in the window cache (it holds {held})")
            slots.append(held.index(f))
        return slots

    def overflow(self, num_frames: int) -> list[int]:
        """Logical slots that admitting `num_frames` new frames evicts: the oldest non-sink frames."""
        excess = self.length + num_frames - self.window
        if excess <= 0:
            return []
        if excess > self.length - self.sink_size:
            raise ValueError(f"{num_frames} frames do not fit a window of {self.window} with a sink of {self.sink_size}")
        return list(range(self.sink_size, self.sink_size + excess))

    def admit(self, frames: tuple[int, ...] | list[int]) -> list[int]:
        """Reserve slots for a new block at the end (evicting `overflow`); -> their logical slots.

        The evicted frames' data stays readable through their old physical slots until the block is
        written, so callers move them elsewhere (history bank) before writing.
        """
        evict = self.overflow(len(frames))
        if evict:
            s, e, n = self.sink_size, evict[-1] + 1, self.length
            self._physical = self._physical[:s] + self._physical[e:n] + self._physical[s:e] + self._physical[n:]
            self._frames = self._frames[:s] + self._frames[e:n] + self._frames[s:e] + self._frames[n:]
            self.length -= len(evict)
        slots = list(range(self.length, self.length + len(frames)))
        for slot, f in zip(slots, frames):
            self._frames[slot] = f
        self.length += len(frames)
        return slots

    def copy(self, src: list[int], dst: list[int]) -> None:
        """Copy the data and frame ids of logical slots `src` into logical slots `dst` (every layer)."""
        src_idx, dst_idx = self.index(src), self.index(dst)
        self.k.index_copy_(2, dst_idx, self.k.index_select(2, src_idx))
        self.v.index_copy_(2, dst_idx, self.v.index_select(2, src_idx))
        frames = [self._frames[s] for s in src]
        for slot, f in zip(dst, frames):
            self._frames[slot] = f

    def truncate(self, length: int) -> None:
        """Keep the first `length` logical slots valid (the others become stale)."""
        if not 0 <= length <= self.window:
            raise ValueError(f"length {length} outside [0, window {self.window}]")
        self.length = length

    def index(self, slots: list[int]) -> torch.Tensor:
        """Physical slots of logical `slots` on the cache's device: [len(slots)] long. Valid until the next
        `admit`; build it once per block (it is a host-to-device copy) and pass it to read / write."""
        return torch.tensor([self._physical[s] for s in slots], dtype=torch.long, device=self.k.device)

    def read(self, layer: int, slots: list[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """slots: logical slots, or their `index` -> k, v: [B, len(slots) * T, n, d] of one layer."""
        idx = slots if isinstance(slots, torch.Tensor) else self.index(slots)
        return self.k[layer].index_select(1, idx).flatten(1, 2), self.v[layer].index_select(1, idx).flatten(1, 2)

    def read_all_layers(self, slots: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> k, v: [L, B, len(slots), T, n, d] (for moving frames into a history bank). A view of the
        cache when the slots sit in consecutive physical slots (the bank copies them before the cache is
        written again; a fresh copy here would cost a page-faulting allocation per block on the CPU)."""
        physical = [self._physical[s] for s in slots]
        if physical == list(range(physical[0], physical[0] + len(physical))):
            return self.k[:, :, physical[0] : physical[-1] + 1], self.v[:, :, physical[0] : physical[-1] + 1]
        idx = self.index(slots)
        return self.k.index_select(2, idx), self.v.index_select(2, idx)

    def write(self, layer: int, slots: list[int] | torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """slots: logical slots, or their `index`; k, v: [B, len(slots) * T, n, d] before RoPE."""
        idx = slots if isinstance(slots, torch.Tensor) else self.index(slots)
        self.k[layer].index_copy_(1, idx, k.unflatten(1, (idx.numel(), -1)).to(self.k.dtype))
        self.v[layer].index_copy_(1, idx, v.unflatten(1, (idx.numel(), -1)).to(self.v.dtype))

    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2
