"""Config dtype names -> torch dtypes (the one place this mapping lives)."""
from __future__ import annotations

import sys

import torch

DTYPES = ("float32", "bfloat16", "float16")
BANK_DTYPES = (*DTYPES, "float8_e4m3fn")  # the history bank may also store float8 (with scales)


def torch_dtype(name: str) -> torch.dtype:
    """A name of BANK_DTYPES -> the torch dtype."""
    if name not in BANK_DTYPES:
        raise ValueError(f"dtype '{name}' is not one of {list(BANK_DTYPES)}")
    return getattr(torch, name)


def resolve_dtype(name: str, default: torch.dtype) -> torch.dtype:
    """`auto` -> `default`, else the named dtype."""
    return default if name == "auto" else torch_dtype(name)


def auto_dtype(device: torch.device, bf16_supported: bool) -> torch.dtype:
    """bfloat16 on a GPU that computes it natively, else float32.

    Not float16 on older GPUs: the UMT5 text encoder and the DiT's residual stream exceed float16's
    range (65504) at full size, and float32 is exact where bf16 is not available.
    """
    return torch.bfloat16 if device.type == "cuda" and bf16_supported else torch.float32


def compute_dtype(name: str, device: torch.device) -> torch.dtype:
    """The model dtype of a run: `auto` is bfloat16 on a GPU with native bf16, else float32 (said on stderr
    for a GPU without it)."""
    if name != "auto":
        return torch_dtype(name)
    supported = device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cuda" and not supported:
        print(f"note: {torch.cuda.get_device_name(device)} has no native bfloat16; dtype auto runs in float32 "
              "(float16 would overflow in the text encoder); set dtype=bfloat16 to force emulated bf16", file=sys.stderr)
    return auto_dtype(device, supported)


def dtype_name(dtype: torch.dtype) -> str:
    """torch.bfloat16 -> 'bfloat16' (for summaries and file headers)."""
    return str(dtype).removeprefix("torch.")
