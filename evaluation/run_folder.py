"""What an inference run folder holds, read from its files: which backbone / method / length, its
videos, their frames, latents and retrieval logs, and the retrieval encoder that embeds its latents.

This is the evaluation's only link to the inference package (config schema, video reader, model
builders): everything else in `evaluation/` works on the plain data returned here.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.build import load_autoencoder
from utils.video_io import FPS, read_video
from wan.geometry import VAE_TEMPORAL_STRIDE
from wan.model_config import model_preset

SUMMARY_NAME = "summary.json"
# Method display names as in the paper's Table 2; the keys are the values of a config's `method`.
METHOD_NAMES = {"native": "base (native)", "infrope": "∞-RoPE", "deepforcing": "Deep Forcing",
                "latentmem": "LongLive-RAG"}
METHOD_ORDER = tuple(METHOD_NAMES.values())
# Backbone display names by generator checkpoint file stem (README "Download the real assets").
BACKBONE_NAMES = {"causal_forcing": "Causal-Forcing", "self_forcing": "Self-Forcing", "longlive_base": "LongLive"}
BACKBONE_ORDER = ("Self-Forcing", "LongLive", "Causal-Forcing")
DEMO_BACKBONE = "demo (random weights)"
VIDEO_FRAMES_PER_LATENT = VAE_TEMPORAL_STRIDE  # F latent frames decode to 1 + 4 (F - 1) video frames


class RunFolderError(ValueError):
    """A run folder is incomplete or cannot be identified; the message names the folder and the fix."""


@dataclass(frozen=True)
class RunInfo:
    folder: Path
    run_id: str  # file-name-safe and unique per folder
    backbone: str
    method: str  # a METHOD_NAMES value
    num_latent_frames: int
    label: str | None  # the random-weight banner, None for real weights
    config: dict  # the run's inference config as saved in summary.json
    stems: tuple[str, ...]

    @property
    def fps(self) -> float:
        return float(FPS)  # inference writes every mp4 at Wan's frame rate

    @property
    def seconds(self) -> float:
        return self.num_latent_frames * VIDEO_FRAMES_PER_LATENT / FPS

    @property
    def length(self) -> str:
        """Table 2's length label: 120 latent frames -> '30s'."""
        return f"{self.seconds:g}s"

    def video(self, stem: str) -> Path:
        return self.folder / f"{stem}.mp4"

    def latents(self, stem: str) -> Path:
        return self.folder / f"{stem}.latents.pt"

    def retrieval_log(self, stem: str) -> Path:
        return self.folder / f"{stem}.retrieval.json"


def run_identity(config: dict) -> tuple[str, str]:
    """(backbone, method) display names of a run, from its summary.json config.

    The method is the config's `method` key when present (native | latentmem | infrope |
    deepforcing), else `model_kwargs.use_latentmem`. The backbone is named by the generator
    checkpoint's file stem (an unknown stem is shown as is); the demo preset is labelled as such.
    """
    if "method" in config:
        if config["method"] not in METHOD_NAMES:
            raise RunFolderError(f"config method '{config['method']}' is not one of {sorted(METHOD_NAMES)}")
        method = METHOD_NAMES[config["method"]]
    else:
        method = METHOD_NAMES["latentmem" if config["model_kwargs"]["use_latentmem"] else "native"]
    if config["model_preset"] == "demo":
        return DEMO_BACKBONE, method
    if config.get("generator_ckpt") is None:
        raise RunFolderError(f"model_preset '{config['model_preset']}' without generator_ckpt: cannot name the backbone")
    stem = Path(config["generator_ckpt"]).stem
    return BACKBONE_NAMES.get(stem, stem), method


def _run_id(folder: Path) -> str:
    digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:6]
    return f"{folder.resolve().parent.name}-{folder.name}-{digest}"


def read_run(folder: str | Path) -> RunInfo:
    """A run folder as written by inference.py; every listed video's mp4 must exist."""
    folder = Path(folder)
    path = folder / SUMMARY_NAME
    if not path.is_file():
        raise RunFolderError(f"'{folder}' has no {SUMMARY_NAME}: it is not a finished inference run folder "
                             "(run bash inference.sh ... output_folder=<folder> to completion first)")
    summary = json.loads(path.read_text())
    config = summary["config"]
    stems = tuple(sorted(record["stem"] for record in summary["videos"]))
    missing = [stem for stem in stems if not (folder / f"{stem}.mp4").is_file()]
    if missing:
        raise RunFolderError(f"'{folder}': {SUMMARY_NAME} lists videos whose mp4 is missing: {missing}")
    backbone, method = run_identity(config)
    return RunInfo(folder, _run_id(folder), backbone, method, config["num_output_frames"], summary.get("label"),
                   config, stems)


def read_frames(path: Path) -> np.ndarray:
    """[T, H, W, 3] uint8 frames of an mp4."""
    return read_video(path)


def read_latents(path: Path) -> torch.Tensor:
    """[F, C, H, W] float32 latents saved by `save_latents: true`."""
    return torch.load(path, map_location="cpu", weights_only=True).float()


def retrieval_encoder(run: RunInfo, ae_ckpt: str | None, device: torch.device) -> torch.nn.Module:
    """The retrieval AE of `ae_ckpt` (None: the demo AE of a demo run), sized to the run's latents,
    built by the inference builder (the demo AE is the one the demo runs retrieve with).

    Only the keys the builder reads are taken from the run's config, so summaries written by other
    versions (more or fewer keys) still load."""
    frame = (model_preset(run.config["model_preset"]).in_dim, run.config["latent_height"], run.config["latent_width"])
    return load_autoencoder(ae_ckpt, frame, device)
