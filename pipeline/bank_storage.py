"""Where the history bank's slabs live: accelerator memory, (pinned) host memory, or a file on disk.

The storage is frame-major: slot s holds one banked frame as one contiguous slab
`[B, L, 2 (k, v), T, n, d]`, so banking a frame from the GPU into pinned memory is one contiguous,
asynchronous copy on a side stream, and reading the K selected frames from host memory for a GPU
is K contiguous slab copies into one reused pinned staging buffer, moved in one transfer. When
the storage is on the compute device, the selected slabs are read in place. Slots come in
chunks allocated as the video grows (never the whole video at start, never more than the
budget), so growing copies nothing.

Tiers:
  MemoryTier(device)            accelerator memory, or host memory when the compute device is the CPU
  MemoryTier("cpu", pin=True)   pinned host memory, read into the GPU by DMA
  DiskTier(folder)              a memory-mapped file in `folder`, unlinked as soon as it is created:
                                it never shows in the folder and the OS frees it when the process
                                ends, however it ends (SIGKILL included)
"""
from __future__ import annotations

import mmap
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

CHUNK_BYTES = 256 * 2**20  # slots are allocated this many bytes at a time (at least one frame)
GB = 1e9


class BankStorageError(RuntimeError):
    """The bank cannot be stored where the config asks (no room, unwritable folder, ...)."""


class MemoryTier:
    def __init__(self, device: torch.device | str, pin: bool = False):
        self.device = torch.device(device)
        self.pin = pin
        self.name = "pinned host" if pin else ("host" if self.device.type == "cpu" else f"accelerator ({self.device})")

    def allocate(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        return torch.empty(shape, dtype=dtype, device=self.device, pin_memory=self.pin)

    def close(self) -> None:
        pass


class DiskTier:
    """Chunks are consecutive regions of one unlinked file, reserved with posix_fallocate (so a full
    disk is an error at allocation, never a SIGBUS at a later write) and mapped with mmap."""

    device = torch.device("cpu")
    pin = False

    def __init__(self, folder: str | os.PathLike, planned_bytes: int):
        self.folder = Path(folder)
        self.name = f"disk ({self.folder})"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, path = tempfile.mkstemp(prefix="history_bank-", suffix=".kv", dir=self.folder)
        except OSError as err:
            raise BankStorageError(
                f"memory_folder '{self.folder}' is not a writable folder ({err.strerror}); "
                "set model_kwargs.memory_folder to a folder you can write") from err
        os.unlink(path)
        self._fd, self._end = fd, 0
        free = shutil.disk_usage(self.folder).free
        if planned_bytes > free:
            self.close()
            raise BankStorageError(
                f"memory_folder '{self.folder}' has {free / GB:.2f} GB free but the history bank of this run needs up to "
                f"{planned_bytes / GB:.2f} GB; free space there, choose another folder, or set model_kwargs.memory_budget_gb")

    def allocate(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        nbytes = torch.Size(shape).numel() * dtype.itemsize
        mapped = -(-nbytes // mmap.ALLOCATIONGRANULARITY) * mmap.ALLOCATIONGRANULARITY
        try:
            os.posix_fallocate(self._fd, self._end, mapped)
        except OSError as err:
            raise BankStorageError(
                f"memory_folder '{self.folder}' cannot hold {mapped / GB:.3f} GB more of history bank ({err.strerror}); "
                "free space there, choose another folder, or set model_kwargs.memory_budget_gb") from err
        region = mmap.mmap(self._fd, mapped, offset=self._end)
        self._end += mapped
        return torch.frombuffer(region, dtype=torch.uint8, count=nbytes).view(dtype).view(shape)

    def close(self) -> None:
        # the mappings stay valid until their tensors are freed; the file has no name to remove
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


Tier = MemoryTier | DiskTier


@dataclass
class TierChoice:
    tier: Tier
    reason: str


def host_available_bytes() -> int:
    """MemAvailable of /proc/meminfo (what the OS can give without swapping)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def headroom(total: int) -> int:
    """Memory left for everything else on a device: activations, the VAE decode, other processes."""
    return max(2 * 2**30, total // 5)


def fits_with_headroom(need: float, free: float, total: float) -> bool:
    """`auto`'s rule for placing the bank on a device: `need` bytes fit in `free` with the device's headroom."""
    return need + headroom(total) <= free


def choose_tier(memory_device: str, folder: str | None, planned_bytes: int, compute: torch.device) -> TierChoice:
    """The tier named by `memory_device` (auto | cpu | cuda[:i] | disk); `auto` takes the fastest tier where
    `planned_bytes` fit with headroom, measured now (after the model, cache and text encoder are loaded)."""
    if memory_device == "disk":
        return TierChoice(DiskTier(folder, planned_bytes), "memory_device disk")
    if memory_device != "auto":
        device = torch.device(memory_device)
        if device.type == compute.type and device.index is None:
            device = compute  # `cuda` means the GPU this rank computes on
        pin = device.type == "cpu" and compute.type == "cuda"
        return TierChoice(MemoryTier(device, pin), f"memory_device {memory_device}")
    need = f"{planned_bytes / GB:.2f} GB"
    if compute.type == "cuda":
        free, total = torch.cuda.mem_get_info(compute)
        if fits_with_headroom(planned_bytes, free, total):
            return TierChoice(MemoryTier(compute), f"auto: {need} fit in {compute}'s {free / GB:.1f} GB free beside the model")
        gpu_reason = f"{need} do not fit in {compute}'s {free / GB:.1f} GB free with {headroom(total) / GB:.1f} GB headroom"
    else:
        gpu_reason = "no accelerator"
    available = host_available_bytes()
    host_total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if fits_with_headroom(planned_bytes, available, host_total):
        tier = MemoryTier("cpu", pin=compute.type == "cuda")
        return TierChoice(tier, f"auto: {gpu_reason}; {need} fit in {available / GB:.1f} GB available host memory")
    host_reason = f"{need} do not fit in {available / GB:.1f} GB available host memory with {headroom(host_total) / GB:.1f} GB headroom"
    if folder is None:
        raise BankStorageError(
            f"the history bank of this run needs up to {need}: {gpu_reason}; {host_reason}. Set model_kwargs.memory_budget_gb, "
            "or model_kwargs.memory_device=disk with model_kwargs.memory_folder=<a folder with room>")
    return TierChoice(DiskTier(folder, planned_bytes), f"auto: {gpu_reason}; {host_reason}; disk folder {folder}")


class SlabStorage:
    """Slots of `slab_shape` ([B, L, 2, T, n, d]) in `dtype` on one tier, allocated chunk by chunk up to
    `max_slots` (None: unbounded)."""

    def __init__(self, tier: Tier, slab_shape: tuple[int, ...], dtype: torch.dtype, compute: torch.device,
                 max_slots: int | None):
        self.tier, self.slab_shape, self.dtype, self.compute = tier, tuple(slab_shape), dtype, compute
        # float8 has too few kernels on some platforms; slabs are only copied here, so keep bytes
        self._raw = torch.uint8 if dtype.itemsize == 1 else dtype
        self.slab_bytes = torch.Size(slab_shape).numel() * dtype.itemsize
        self.max_slots = max_slots
        self.chunk_slots = max(1, CHUNK_BYTES // self.slab_bytes)
        self._chunks: list[torch.Tensor] = []  # each [c, B, L, 2, T, n, d]
        self.staged = tier.device != compute  # host tiers feeding a GPU read through a pinned buffer
        self._staging: torch.Tensor | None = None
        self._staging_free: torch.cuda.Event | None = None  # last transfer out of the staging buffer done
        self._written: torch.cuda.Event | None = None  # last side-stream banking copy done
        cuda = compute.type == "cuda"
        self._copy_stream = torch.cuda.Stream(compute) if cuda and self.staged else None

    @property
    def capacity(self) -> int:
        return sum(c.shape[0] for c in self._chunks)

    def nbytes(self) -> int:
        return self.capacity * self.slab_bytes

    def ensure(self, slots: int) -> None:
        """Allocate chunks until `slots` slots exist."""
        while self.capacity < slots:
            n = self.chunk_slots if self.max_slots is None else min(self.chunk_slots, self.max_slots - self.capacity)
            if n <= 0:
                raise BankStorageError(f"history bank slot {slots - 1} is beyond its budget of {self.max_slots} frames")
            self._chunks.append(self.tier.allocate((n, *self.slab_shape), self._raw))

    def _slab(self, slot: int) -> torch.Tensor:
        c = self.chunk_slots
        return self._chunks[slot // c][slot % c]

    def write(self, slot: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """k, v: [L, B, T, n, d] of one frame, in `dtype`, on the compute device."""
        self.ensure(slot + 1)
        dest = self._slab(slot)  # [B, L, 2, T, n, d]
        if self._copy_stream is None:
            # two strided copies straight into the slab: real copies, the window cache reuses its slots
            dest.select(2, 0).copy_(k.transpose(0, 1).view(self._raw))
            dest.select(2, 1).copy_(v.transpose(0, 1).view(self._raw))
            return
        # a GPU -> pinned copy is asynchronous only into a contiguous destination: build the slab on the GPU
        slab = torch.stack([k, v], dim=2).transpose(0, 1).contiguous().view(self._raw)
        self._copy_stream.wait_stream(torch.cuda.current_stream(self.compute))
        with torch.cuda.stream(self._copy_stream):
            dest.copy_(slab, non_blocking=self.tier.pin)
        slab.record_stream(self._copy_stream)
        self._written = self._copy_stream.record_event()

    def read(self, rows: list[tuple[int, int]]) -> list[torch.Tensor]:
        """rows: (slot, sample) pairs -> one [L, 2, T, n, d] tensor each, in `dtype`, on the compute device:
        views of the storage when it is on the compute device, else rows of one staged transfer."""
        if self._written is not None:
            self._written.synchronize()  # banking copies of earlier blocks have landed
        if not self.staged:
            return [self._slab(slot)[b].view(self.dtype) for slot, b in rows]
        staging = self._staging_buffer(len(rows))
        for j, (slot, b) in enumerate(rows):
            staging[j].copy_(self._slab(slot)[b])
        out = staging.to(self.compute, non_blocking=True)  # staged: compute is a GPU, the staging buffer pinned
        if self.compute.type == "cuda":
            self._staging_free = torch.cuda.current_stream(self.compute).record_event()
        return list(out.view(self.dtype).unbind(0))

    def _staging_buffer(self, n: int) -> torch.Tensor:
        """The reused host buffer, pinned when the compute device is a GPU; free once its last transfer ended."""
        if self._staging_free is not None:
            self._staging_free.synchronize()
        if self._staging is None or self._staging.shape[0] < n:
            pin = self.compute.type == "cuda"
            self._staging = torch.empty((n, *self.slab_shape[1:]), dtype=self._raw, pin_memory=pin)
        return self._staging[:n]

    def close(self) -> None:
        self._chunks.clear()
        self._staging = None
        self.tier.close()
