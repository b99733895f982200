"""Checks for files that users download by hand (weights, tokenizer, prompt lists)."""
from __future__ import annotations

import os
from pathlib import Path

WAN_DOWNLOAD = "hf download Wan-AI/Wan2.1-T2V-1.3B --local-dir wan_models/Wan2.1-T2V-1.3B"
RAG_DOWNLOAD = 'hf download qixinhu11/LongLive-RAG --local-dir . --include "checkpoints/*" "toydatasets/*"'


class MissingAssetError(FileNotFoundError):
    """A required file or folder is absent; the message says how to get it."""


def require_path(path: str | os.PathLike, what: str, download: str) -> Path:
    """Return `path` if it exists, else raise naming the path and the download command."""
    p = Path(path)
    if not p.exists():
        raise MissingAssetError(f"{what} not found at '{p}'. Download it with:\n    {download}")
    return p
