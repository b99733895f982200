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
from utils.settings import settings_mismatch

SETTINGS_FILE = "generation.json"
logger = logging.getLogger(__name__)


def claim_corpus_folder(folder: str | Path, settings: dict, config_hash: str, skip_existing: bool, is_main: bool) -> None:
    """Check that `folder` holds (or may hold) a corpus of `settings`; the main rank records them.

    Every rank checks the same file, so a mismatch stops all of them.
    """
    path = Path(folder) / SETTINGS_FILE
    if skip_existing and path.exists():
        old = json.loads(path.read_text())
        if old["config_hash"] != config_hash:
            raise settings_mismatch(folder, "a corpus", old["settings"], settings,
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
