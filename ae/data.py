"""Training data of the retrieval AE: random chunks of S consecutive latent frames.

Two on-disk layouts are read, chosen by what `data_dir` holds:
- reference layout: a folder of `.pt` files, each a tensor [T, C, H, W] (the released toy
  latents); opened with `torch.load(mmap=True)`, so a chunk reads only its own pages;
- project corpus (`utils.latent_corpus`, a folder with `index.json`): chunks are sliced from
  the safetensors files of the indexed videos.

Videos are split into training and validation BY VIDEO, so no frame of a validation video is
ever trained on. Unreadable, mis-shaped or too-short files are logged by name and skipped.
"""
from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from utils import latent_corpus
from utils.assets import require_user_path

logger = logging.getLogger(__name__)

DATA_HINT = ("set data_dir to a folder of latent videos (*.pt) or a latent corpus (generate_latent.py), or get toy "
             "data: python -m utils.download toy_data (or python toydatasets/make_toy_latents.py --help)")
_LOAD_ERRORS = (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError)


class LatentDataError(ValueError):
    """The training data cannot be used as configured; the message names the folder and the fix."""


class _UnusableVideo(Exception):
    pass


@dataclass(frozen=True)
class VideoRecord:
    name: str  # file name relative to the data folder; identifies the video in logs and splits
    path: Path
    num_frames: int

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Frames start..stop-1 as stored: [stop - start, C, H, W]."""
        if self.path.suffix == ".safetensors":
            return latent_corpus.read_frames(self.path, start, stop)
        return _load_pt(self.path)[start:stop]


def _load_pt(path: Path) -> torch.Tensor:
    video = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    if not isinstance(video, torch.Tensor):
        raise _UnusableVideo(f"holds a {type(video).__name__}, not a tensor [T, C, H, W]")
    return video


def _probe(path: Path) -> tuple[int, tuple[int, ...]]:
    """(T, frame shape) of a video file, without reading its frames."""
    if path.suffix == ".safetensors":
        if not latent_corpus.verify_video(path):
            raise _UnusableVideo("is incomplete or unreadable")
        entry = latent_corpus.index_entry(path)
        return entry["num_frames"], tuple(entry["frame_shape"])
    try:
        video = _load_pt(path)
    except _LOAD_ERRORS as err:
        raise _UnusableVideo(f"cannot be loaded ({type(err).__name__}: {err})") from None
    if video.dim() != 4:
        raise _UnusableVideo(f"has shape {list(video.shape)}, not [T, C, H, W]")
    return video.shape[0], tuple(video.shape[1:])


def _candidate_files(data_dir: Path) -> list[Path]:
    if latent_corpus.is_corpus(data_dir):
        return [data_dir / entry["file"] for entry in latent_corpus.read_index(data_dir).values()]
    return sorted(p for p in data_dir.glob("*.pt") if not p.name.startswith("."))


def discover_videos(data_dir: str | os.PathLike, frame_shape: tuple[int, int, int], min_frames: int) -> list[VideoRecord]:
    """Usable videos of `data_dir` (name order): frames of `frame_shape` [C, H, W] and at least `min_frames` of them."""
    data_dir = require_user_path(data_dir, "latent training data (data_dir)", DATA_HINT)
    videos = []
    for path in _candidate_files(data_dir):
        name = path.relative_to(data_dir).as_posix()
        try:
            num_frames, shape = _probe(path)
            if shape != tuple(frame_shape):
                raise _UnusableVideo(f"has frames {list(shape)}, the model expects {list(frame_shape)}")
            if num_frames < min_frames:
                raise _UnusableVideo(f"has {num_frames} frames, fewer than one chunk of {min_frames}")
        except _UnusableVideo as why:
            logger.warning("skipping video %s: it %s", path, why)
            continue
        videos.append(VideoRecord(name, path, num_frames))
    if not videos:
        raise LatentDataError(
            f"no usable latent video in '{data_dir}' (expected *.pt tensors [T, {', '.join(map(str, frame_shape))}] "
            f"with T >= {min_frames}, or a latent corpus with index.json); see the warnings above"
        )
    return videos


def split_by_video(videos: list[VideoRecord], val_fraction: float, seed: int) -> tuple[list[VideoRecord], list[VideoRecord]]:
    """Seeded split into (train, validation) videos; validation gets round(fraction * n), at least one."""
    if len(videos) < 2:
        raise LatentDataError(f"a train/validation split needs at least 2 videos, found {len(videos)} ({[v.name for v in videos]})")
    ordered = sorted(videos, key=lambda v: v.name)
    perm = torch.randperm(len(ordered), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = min(max(1, round(val_fraction * len(ordered))), len(ordered) - 1)
    val = sorted((ordered[i] for i in perm[:n_val]), key=lambda v: v.name)
    train = sorted((ordered[i] for i in perm[n_val:]), key=lambda v: v.name)
    return train, val


class LatentChunkDataset(Dataset):
    """Item i of an epoch: [S, C, H, W] float32 frames of one video.

    Each epoch draws `chunks_per_video` random start frames per video and shuffles all chunks;
    the plan depends only on (seed, epoch), so every process and every resumed run sees the same
    chunks in the same order. Call `set_epoch` before iterating a new epoch.
    """

    def __init__(self, videos: list[VideoRecord], seq_len: int, chunks_per_video: int, seed: int):
        too_short = [v.name for v in videos if v.num_frames < seq_len]
        if too_short:
            raise LatentDataError(f"videos {too_short} are shorter than seq_len {seq_len}")
        self.videos = videos
        self.seq_len = seq_len
        self.chunks_per_video = chunks_per_video
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        chunks = [
            (vid, start)
            for vid, video in enumerate(self.videos)
            for start in torch.randint(0, video.num_frames - self.seq_len + 1, (self.chunks_per_video,), generator=g).tolist()
        ]
        self._plan = [chunks[i] for i in torch.randperm(len(chunks), generator=g).tolist()]

    @property
    def plan(self) -> list[tuple[str, int]]:
        """(video name, start frame) of every item of the current epoch, in item order."""
        return [(self.videos[vid].name, start) for vid, start in self._plan]

    def __len__(self) -> int:
        return len(self._plan)

    def __getitem__(self, i: int) -> torch.Tensor:
        """[seq_len, C, H, W] in the stored dtype: the trainer upcasts on its device, so bf16 crosses the bus."""
        vid, start = self._plan[i]
        return self.videos[vid].read(start, start + self.seq_len)


def build_chunk_datasets(
    data_dir: str | os.PathLike,
    frame_shape: tuple[int, int, int],
    seq_len: int,
    chunks_per_video: int,
    val_fraction: float,
    seed: int,
) -> tuple[LatentChunkDataset, LatentChunkDataset]:
    """(train, validation) datasets over a by-video split of the usable videos in `data_dir`."""
    train, val = split_by_video(discover_videos(data_dir, frame_shape, seq_len), val_fraction, seed)
    # validation keeps its epoch-0 plan: the same chunks every epoch, so its losses are comparable
    return (
        LatentChunkDataset(train, seq_len, chunks_per_video, seed),
        LatentChunkDataset(val, seq_len, chunks_per_video, seed + 1),
    )
