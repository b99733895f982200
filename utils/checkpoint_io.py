"""Reading torch checkpoint files safely: weights_only always, and one honest error for a file that is not one.

torch's own messages for a damaged file talk about mmap and zipfile serialisation, or suggest
retrying with `weights_only=False`, which would run arbitrary code from that file; this module
replaces them with the file's name, what it should be, and how to get a good copy.
"""
from __future__ import annotations

import os
import pickle
import zipfile

import torch


class CorruptCheckpointError(ValueError):
    """A checkpoint file exists but cannot be read as a checkpoint."""


def load_checkpoint(path: str | os.PathLike, what: str, fix: str, mmap: bool = False):
    """torch.load(path, weights_only=True) on the CPU; a CorruptCheckpointError naming `what`, the file and `fix`
    when the file is truncated, random bytes or a pickle of anything but tensors and containers."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError, UnicodeDecodeError) as err:
        raise CorruptCheckpointError(
            f"{what} '{path}': file is corrupt or not a checkpoint ({type(err).__name__}); {fix}") from None
