"""What determines a job's outputs, as a flat comparable record: hash, differing keys, the refusal.

Resumable jobs (corpus generation, inference with skip_existing) record the settings their outputs
were made with and reuse an output only when the current settings are the same; otherwise they
refuse with the keys that differ, so a folder never mixes results of two configs.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from utils.config import ConfigError


def _flatten(settings: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def settings_diff(old: dict, new: dict) -> list[str]:
    """`key: old -> new` for every (dotted) key whose value differs."""
    a, b = _flatten(old), _flatten(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


def config_hash(settings: dict) -> str:
    """16 hex digits identifying `settings`."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def file_fingerprint(path: str | os.PathLike | None) -> dict | None:
    """Path, size and modification time of a weights file (None for random weights): a replaced file
    changes the fingerprint without hashing gigabytes."""
    if path is None:
        return None
    stat = Path(path).stat()
    return {"path": str(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def settings_mismatch(folder: str | os.PathLike, what: str, old: dict, new: dict, regenerate: str) -> ConfigError:
    """The refusal of a resumed run whose settings differ from those `what` in `folder` was made with."""
    diff = "\n  ".join(settings_diff(old, new)) or "(no settings recorded)"
    return ConfigError(f"output_folder '{folder}' holds {what} generated with other settings:\n  {diff}\n"
                       f"Use another output_folder, or {regenerate}")
