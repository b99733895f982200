"""Latent corpus on disk: one safetensors file per video plus an index of complete videos.

Layout of a corpus folder::

    <corpus_dir>/
        index.json                  complete videos (see below)
        videos/<id>.safetensors     tensor "latents": [T, C, H, W] (dtype as written, e.g. bfloat16)
                                    + string header metadata

Header metadata (safetensors allows str -> str only): the writer's own keys (prompt, seed,
backbone, config_hash, ...; non-string values are JSON-encoded) plus the keys this module sets:
``format_version``, ``num_frames`` (T), ``frame_shape`` (JSON list [C, H, W]) and ``dtype``.

``index.json``::

    {"format": "longlive-rag-latent-corpus", "version": 1,
     "videos": {"<id>": {"file": "videos/<id>.safetensors", "num_frames": T,
                         "frame_shape": [C, H, W], "dtype": "bfloat16", "metadata": {...}}}}

Writes are atomic: a video file is written under a temporary name and renamed, and only then
added to the index (itself rewritten atomically under a file lock, so several processes may
write into one corpus). A file that exists under its final name is therefore complete; a crash
between the rename and the index update leaves a complete file that `rebuild_index` re-lists.
Files are deterministic: the same latents and metadata give byte-identical video files (header
keys sorted) and index. Readers slice frames through safetensors' memory map, so a chunk costs
only its own bytes.
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from utils.atomic import atomic_path, atomic_write_text, remove_stale_temporaries
from utils.dtypes import dtype_name
from utils.locks import exclusive

FORMAT_NAME = "longlive-rag-latent-corpus"
FORMAT_VERSION = 1
INDEX_FILE = "index.json"
VIDEOS_DIR = "videos"
TENSOR_KEY = "latents"
RESERVED_METADATA = ("format_version", "num_frames", "frame_shape", "dtype")

_VIDEO_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
logger = logging.getLogger(__name__)


class CorpusError(ValueError):
    """A corpus file or request is invalid; the message names the file and the problem."""


def _video_file(video_id: str) -> str:
    """A video's file relative to the corpus folder."""
    if not _VIDEO_ID.match(video_id):
        raise CorpusError(f"video id '{video_id}' must match {_VIDEO_ID.pattern} (it becomes a file name)")
    return f"{VIDEOS_DIR}/{video_id}.safetensors"


def video_path(corpus_dir: str | os.PathLike, video_id: str) -> Path:
    return Path(corpus_dir) / _video_file(video_id)


def encode_metadata(metadata: Mapping[str, object]) -> dict[str, str]:
    """The caller's metadata as safetensors header strings: strings as they are, everything else JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}


def index_record(video_id: str, num_frames: int, frame_shape: list[int], dtype: str, metadata: Mapping[str, str]) -> dict:
    """The index record of a video (what `index_entry` reads back from its file)."""
    return {
        "file": _video_file(video_id),
        "num_frames": num_frames,
        "frame_shape": list(frame_shape),
        "dtype": dtype,
        "metadata": dict(metadata),
    }


def _header_metadata(latents: torch.Tensor, metadata: Mapping[str, object]) -> dict[str, str]:
    clash = sorted(set(metadata) & set(RESERVED_METADATA))
    if clash:
        raise CorpusError(f"metadata keys {clash} are set by write_video from the tensor; remove them")
    header = encode_metadata(metadata)
    header.update(
        format_version=str(FORMAT_VERSION),
        num_frames=str(latents.shape[0]),
        frame_shape=json.dumps(list(latents.shape[1:])),
        dtype=dtype_name(latents.dtype),
    )
    return header


def _canonical_safetensors(latents: torch.Tensor, header: Mapping[str, str]) -> bytes:
    """The safetensors file of `latents` with its JSON header keys sorted.

    safetensors serialises the metadata from a hash map, so the same video would get a different
    key order, hence different bytes, in every process. Re-serialising the header with sorted keys
    (same alignment padding, data untouched) makes equal content give equal files.
    """
    raw = safetensors_bytes({TENSOR_KEY: latents}, metadata=dict(header))
    header_len = int.from_bytes(raw[:8], "little")
    header_json = json.loads(raw[8 : 8 + header_len])
    text = json.dumps(header_json, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # the data section starts 8-byte aligned, as safetensors writes it
    return len(text).to_bytes(8, "little") + text + raw[8 + header_len :]


def write_video(
    corpus_dir: str | os.PathLike, video_id: str, latents: torch.Tensor, metadata: Mapping[str, object]
) -> Path:
    """Atomically write `latents` [T, C, H, W] as `videos/<video_id>.safetensors`, then list it in the index."""
    if latents.dim() != 4 or latents.shape[0] < 1:
        raise CorpusError(f"video '{video_id}': latents must be [T, C, H, W] with T >= 1, got {tuple(latents.shape)}")
    path = video_path(corpus_dir, video_id)
    header = _header_metadata(latents, metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _canonical_safetensors(latents.detach().cpu().contiguous(), header)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    add_to_index(corpus_dir, {video_id: index_entry(path)})
    return path


def video_length(path: str | os.PathLike) -> int:
    """Number of frames T of a video file, from its header only."""
    with safe_open(str(path), framework="pt") as f:
        return f.get_slice(TENSOR_KEY).get_shape()[0]


def read_frames(path: str | os.PathLike, start: int, stop: int) -> torch.Tensor:
    """Frames start..stop-1 of a video file: [stop - start, C, H, W], reading only those bytes."""
    with safe_open(str(path), framework="pt") as f:
        frames = f.get_slice(TENSOR_KEY)
        length = frames.get_shape()[0]
        if not 0 <= start < stop <= length:
            raise CorpusError(f"{path}: frame range [{start}, {stop}) is outside [0, {length})")
        return frames[start:stop]


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def verify_video(path: str | os.PathLike) -> bool:
    """True if the file is complete and readable and its tensor agrees with its header metadata."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if list(f.keys()) != [TENSOR_KEY]:
                return False
            frames = f.get_slice(TENSOR_KEY)
            shape = frames.get_shape()
            if len(shape) != 4 or shape[0] < 1:
                return False
            if int(meta.get("num_frames", -1)) != shape[0] or json.loads(meta.get("frame_shape", "null")) != shape[1:]:
                return False
            first_last = torch.cat([frames[0:1], frames[shape[0] - 1 : shape[0]]])
            return dtype_name(first_last.dtype) == meta.get("dtype")
    except (SafetensorError, OSError, ValueError):
        return False


def index_entry(path: str | os.PathLike) -> dict:
    """The index record of one video file (path relative to the corpus folder)."""
    path = Path(path)
    meta = read_metadata(path)
    own = {k: v for k, v in meta.items() if k not in RESERVED_METADATA}
    return index_record(path.stem, int(meta["num_frames"]), json.loads(meta["frame_shape"]), meta["dtype"], own)


def read_index(corpus_dir: str | os.PathLike) -> dict[str, dict]:
    """Video id -> index record; empty if the corpus has no index yet."""
    path = Path(corpus_dir) / INDEX_FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        raise CorpusError(f"{path} is truncated or not JSON ({err}); rerun generate_latent.py with this output_folder "
                          "(skip_existing=true) to rebuild it from the video files") from None
    if data.get("format") != FORMAT_NAME or data.get("version") != FORMAT_VERSION:
        raise CorpusError(
            f"{path}: expected format '{FORMAT_NAME}' version {FORMAT_VERSION}, "
            f"got '{data.get('format')}' version {data.get('version')}"
        )
    return data["videos"]


def is_corpus(path: str | os.PathLike) -> bool:
    return (Path(path) / INDEX_FILE).is_file()


def _index_lock(corpus_dir: Path):
    return exclusive(corpus_dir / f"{INDEX_FILE}.lock")


def _write_index(corpus_dir: Path, videos: Mapping[str, dict]) -> None:
    data = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "videos": videos}
    atomic_write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", corpus_dir / INDEX_FILE)


def add_to_index(corpus_dir: str | os.PathLike, entries: Mapping[str, dict]) -> None:
    """Add or replace index records (read-modify-write under an exclusive lock)."""
    corpus_dir = Path(corpus_dir)
    with _index_lock(corpus_dir):
        videos = read_index(corpus_dir)
        videos.update(entries)
        _write_index(corpus_dir, videos)


def remove_stale_index_writes(corpus_dir: str | os.PathLike) -> int:
    """Delete temporary index files of writers that died mid-write (a live writer holds the lock)."""
    corpus_dir = Path(corpus_dir)
    with _index_lock(corpus_dir):
        return remove_stale_temporaries(corpus_dir / INDEX_FILE)


def rebuild_index(corpus_dir: str | os.PathLike) -> dict[str, dict]:
    """Re-list every video file that passes `verify_video`; other files are logged and left out."""
    corpus_dir = Path(corpus_dir)
    videos = {}
    for path in sorted((corpus_dir / VIDEOS_DIR).glob("*.safetensors")):
        if path.name.startswith("."):  # a temporary file of an unfinished write
            continue
        if verify_video(path):
            videos[path.stem] = index_entry(path)
        else:
            logger.warning("latent corpus: %s is incomplete or unreadable; left out of the index", path)
    with _index_lock(corpus_dir):
        _write_index(corpus_dir, videos)
    return videos
