"""One corpus video's files and whether they hold what the current config generates.

    <output_folder>/videos/latent_XXXXXX.safetensors        the latents (utils/latent_corpus.py layout)
    <output_folder>/pt/latent_XXXXXX.pt                     reference layout [T, C, H, W] float32 (save_pt)
    <output_folder>/verification_videos/latent_XXXXXX.mp4   decoded video (the first max_video_saves positions)

The .pt file and the mp4 are made from the stored latents, so a complete latent file can
re-make either without generating again. Every file is written atomically; the temporaries of a
killed write are removed by the rank that owns the video before it writes again.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from utils import latent_corpus
from utils.atomic import remove_stale_temporaries

PT_DIR = "pt"
VIDEO_DIR = "verification_videos"


@dataclass(frozen=True)
class LatentFiles:
    folder: Path
    video_id: str
    save_pt: bool
    save_video: bool

    @property
    def latents(self) -> Path:
        return latent_corpus.video_path(self.folder, self.video_id)

    @property
    def pt(self) -> Path:
        return self.folder / PT_DIR / f"{self.video_id}.pt"

    @property
    def video(self) -> Path:
        return self.folder / VIDEO_DIR / f"{self.video_id}.mp4"

    def outputs(self) -> list[Path]:
        return [self.latents] + [self.pt] * self.save_pt + [self.video] * self.save_video

    def remove_partial_writes(self) -> int:
        return sum(remove_stale_temporaries(path) for path in (self.latents, self.pt, self.video))


@dataclass(frozen=True)
class ExpectedVideo:
    """What the latent file of a video must hold under the current config."""

    metadata: dict[str, str]  # the generator's header keys (prompt, seed, config_hash, ...)
    num_frames: int
    frame_shape: list[int]  # [C, H, W]
    dtype: str

    def index_entry(self, files: LatentFiles) -> dict:
        """The index record of a matching file (as utils.latent_corpus.index_entry reads it)."""
        return latent_corpus.index_record(files.video_id, self.num_frames, self.frame_shape, self.dtype, self.metadata)


def latents_problem(files: LatentFiles, expected: ExpectedVideo) -> str | None:
    """None if the latent file is complete and holds what the config generates, else what is wrong."""
    path = files.latents
    if not path.exists():
        return "no latent file"
    if not latent_corpus.verify_video(path):
        return "latent file is truncated or unreadable"
    found, wanted = latent_corpus.index_entry(path), expected.index_entry(files)
    for key in ("num_frames", "frame_shape", "dtype"):
        if found[key] != wanted[key]:
            return f"latent file has {key} {found[key]}, expected {wanted[key]}"
    differing = sorted(k for k in wanted["metadata"].keys() | found["metadata"].keys()
                       if found["metadata"].get(k) != wanted["metadata"].get(k))
    if differing:
        return f"latent file metadata {differing} differ from this config's"
    return None


def pt_problem(files: LatentFiles, expected: ExpectedVideo) -> str | None:
    """None if the reference .pt file holds a float32 tensor of the expected shape, else what is wrong."""
    if not files.pt.exists():
        return "no .pt file"
    try:
        tensor = torch.load(files.pt, map_location="cpu", mmap=True, weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as err:
        return f".pt file is unreadable ({type(err).__name__})"
    shape = [expected.num_frames, *expected.frame_shape]
    if not isinstance(tensor, torch.Tensor) or list(tensor.shape) != shape or tensor.dtype != torch.float32:
        return f".pt file does not hold a float32 tensor {shape}"
    return None
