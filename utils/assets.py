"""Checks for files that users download by hand (weights, tokenizer, prompt lists)."""
from __future__ import annotations

import os
from pathlib import Path

# utils/download.py fetches the files of both repositories that a backbone's configs read; the two
# names stay for their call sites (Wan-AI/Wan2.1-T2V-1.3B files, qixinhu11/LongLive-RAG files).
DOWNLOAD = "python -m utils.download <backbone>   (causal_forcing, self_forcing, longlive or all)"
WAN_DOWNLOAD = RAG_DOWNLOAD = DOWNLOAD


class MissingAssetError(FileNotFoundError):
    """A required file or folder is absent; the message says how to get it."""


def require_path(path: str | os.PathLike, what: str, download: str) -> Path:
    """Return `path` if it exists, else raise naming the path and the download command."""
    p = Path(path)
    if not p.exists():
        raise MissingAssetError(f"{what} not found at '{p}'. Download it with:\n    {download}")
    return p
