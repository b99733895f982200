"""The corpus folder before a run: the settings it was generated with, leftovers of killed runs.

`<output_folder>/generation.json` records the settings that determine the latent values. A
resumed run must generate what the folder already holds; a run with other value-changing settings
(seed, backbone, frames, prompts, ...) stops with the keys that differ instead of mixing two
corpora in one folder. `skip_existing=false` regenerates every video and takes the folder over.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from utils import latent_corpus
from utils.atomic import atomic_write_text
from utils.config import ConfigError

SETTINGS_FILE = "generation.json"
logger = logging.getLogger(__name__)


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


def claim_corpus_folder(folder: str | Path, settings: dict, config_hash: str, skip_existing: bool, is_main: bool) -> None:
    """Check that `folder` holds (or may hold) a corpus of `settings`; the main rank records them.

    Every rank checks the same file, so a mismatch stops all of them.
    """
    path = Path(folder) / SETTINGS_FILE
    if skip_existing and path.exists():
        old = json.loads(path.read_text())
        if old["config_hash"] != config_hash:
            diff = "\n  ".join(settings_diff(old["settings"], settings))
            raise ConfigError(
                f"output_folder '{folder}' holds a corpus generated with other settings (config hash "
                f"{old['config_hash']}, this run {config_hash}):\n  {diff}\nUse another output_folder, or "
                "skip_existing=false to regenerate every video of this folder with the new settings")
        return
    if is_main:
        atomic_write_text(json.dumps({"config_hash": config_hash, "settings": settings}, indent=1) + "\n", path)


def repair_index(folder: str | Path) -> None:
    """Remove temporaries of killed index writes; rebuild an index that cannot be read from the files.

    Run by one process before any rank writes (a rebuild would drop entries written meanwhile).
    """
    folder = Path(folder)
    latent_corpus.remove_stale_index_writes(folder)
    try:
        latent_corpus.read_index(folder)
    except (ValueError, KeyError) as err:
        logger.warning("latent corpus index %s is unreadable (%s); rebuilding it from the video files",
                       folder / latent_corpus.INDEX_FILE, err)
        latent_corpus.rebuild_index(folder)
