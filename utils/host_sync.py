"""Count the operations that would stall an accelerator: tensor -> host reads and host data -> tensor.

On CUDA each of these waits for the device (a read needs the queued kernels' result, a copy from
pageable host memory is synchronous); on the CPU they are free, so a CPU test cannot time them but
can count them. `HostSyncCounter` is a TorchFunctionMode that counts them by name while `active`:

- reads: `item`, `tolist`, `cpu`, `numpy`, `bool()` / `int()` / `float()` / `index` of a tensor,
  `nonzero` (its output shape depends on the data);
- host -> tensor: `torch.tensor`, `as_tensor`, `new_tensor`, `from_numpy`.

A CPU run cannot tell a host tensor from a device tensor, so every such call counts: the block loop's
hot path is meant to make none at all. Moves (`to`, `copy_`) are not counted: on a CPU run every
tensor is on the host, so a move to the compute device (a no-op on CUDA too) looks like a move to the
host; `torch.cuda.set_sync_debug_mode` catches the real ones where CUDA exists.
"""
from __future__ import annotations

from collections import Counter

from torch.overrides import TorchFunctionMode

HOST_SYNC_CALLS = frozenset({
    "item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__", "nonzero",
    "tensor", "as_tensor", "new_tensor", "from_numpy",
})


class HostSyncCounter(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.active = False
        self.calls: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if self.active and name in HOST_SYNC_CALLS:
            self.calls[name] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.calls.values())

