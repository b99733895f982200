"""Checks for files that users download by hand (weights, tokenizer, prompt lists)."""
from __future__ import annotations

import os
from pathlib import Path

# utils/download.py fetches the files of both repositories that a backbone's configs read; the two
# names stay for their call sites (Wan-AI/Wan2.1-T2V-1.3B files, qixinhu11/LongLive-RAG files).
DOWNLOAD = "python -m utils.download <backbone>   (causal_forcing, self_forcing, longlive or all)"
WAN_DOWNLOAD = RAG_DOWNLOAD = DOWNLOAD


# Folders the release download fills; any other path is the user's own file, which no download provides.
RELEASED_DIRS = ("checkpoints", "toydatasets")


def released_download(path: str | os.PathLike) -> str | None:
    """RAG_DOWNLOAD for a path inside the released folders (e.g. the shipped prompt lists), else None."""
    parts = Path(path).parts
    return RAG_DOWNLOAD if parts and parts[0] in RELEASED_DIRS else None


class MissingAssetError(FileNotFoundError):
    """A required file or folder is absent; the message says how to get it."""


def require_path(path: str | os.PathLike, what: str, download: str) -> Path:
    """Return `path` if it exists, else raise naming the path and the download command."""
    p = Path(path)
    if not p.exists():
        raise MissingAssetError(f"{what} not found at '{p}'. Download it with:\n    {download}")
    return p


def require_user_path(path: str | os.PathLike, what: str, hint: str) -> Path:
    """Return `path` if it exists, else raise naming it and how to get it: the download for the released
    folders, else `hint` (the user's own prompt lists and training data, which no download provides)."""
    p = Path(path)
    if not p.exists():
        download = released_download(p)
        if download is not None:
            raise MissingAssetError(f"{what} not found at '{p}'. Download it with:\n    {download}")
        raise MissingAssetError(f"{what} not found at '{p}'; {hint}")
    return p
