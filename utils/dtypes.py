"""Config dtype names -> torch dtypes (the one place this mapping lives)."""
from __future__ import annotations

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


def compute_dtype(name: str, device: torch.device) -> torch.dtype:
    """The model dtype of a run: `auto` is bfloat16 on CUDA and float32 on CPU."""
    return resolve_dtype(name, torch.bfloat16 if device.type == "cuda" else torch.float32)


def dtype_name(dtype: torch.dtype) -> str:
    """torch.bfloat16 -> 'bfloat16' (for summaries and file headers)."""
    return str(dtype).removeprefix("torch.")
