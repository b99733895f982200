"""Atomic file output: write to a temporary name in the same folder, then rename.

A crash or a kill never leaves a half-written file under the final name, so resumable jobs
can trust that any file that exists is complete.
"""
from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from pathlib import Path
from typing import Iterator

import torch


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp" + final.suffix, dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 (and some writers, e.g. safetensors, reset it): give the usual permissions
        os.chmod(tmp_path, 0o666 & ~_current_umask())
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Temporary files of `atomic_path(path)` writes that never finished (their writer died)."""
    final = Path(path)
    return sorted(final.parent.glob(f".{glob.escape(final.name)}.*.tmp{glob.escape(final.suffix)}"))


def remove_stale_temporaries(path: str | os.PathLike) -> int:
    """Delete the leftovers of killed writes of `path`; only call it where no live writer of `path` runs."""
    stale = stale_temporaries(path)
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return len(stale)


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    # through a file object: torch.save names the archive inside the file after a path it is given,
    # which would put the temporary name into the file and make equal objects give different bytes
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
