"""DINO ViT-B/16 features for the S(Δ) / D(t) curves, from the optional VBench environment.

DINO comes with VBench's pinned venv and weight cache (evaluation/vbench_env.py), so where both
exist the decoded frames are also encoded with it, by evaluation/dino_extract.py run with the venv's
Python as a subprocess (the project's environment never imports VBench's packages). The venv is
never built for this: without it, or without the two DINO entries of the cache, the record says why.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from evaluation.clips import check_video_name
from evaluation.config import EvaluateConfig
from evaluation.drift import similarity_summary
from evaluation.vbench_env import WEIGHTS, cache_dir, installed_versions, venv_python, weight_path

SCRIPT = Path(__file__).with_name("dino_extract.py")
IMAGE_SIZE = 224  # DINO's training resolution (short side)
DINO_WEIGHTS = tuple(w for w in WEIGHTS if w.what.startswith("DINO ViT-B/16 "))  # the code checkout, the checkpoint


class DinoRunError(RuntimeError):
    """dino_extract.py failed or wrote features that do not match the videos."""


@dataclass(frozen=True)
class DinoCall:
    python: Path
    code: Path
    weights: Path
    frame_stride: int
    timeout_seconds: int

    def command(self, manifest: Path, output_dir: Path) -> list[str]:
        return [str(self.python), str(SCRIPT), "--manifest", str(manifest), "--output_dir", str(output_dir),
                "--code", str(self.code), "--weights", str(self.weights),
                "--frame_stride", str(self.frame_stride), "--image_size", str(IMAGE_SIZE)]

    def options(self) -> dict:
        """Recorded with every result."""
        return {"model": "DINO ViT-B/16 CLS token", "weights": str(self.weights), "frame_stride": self.frame_stride,
                "image_size": IMAGE_SIZE}


def dino_availability(cfg: EvaluateConfig) -> tuple[DinoCall | None, str | None]:
    """(the call, None) where the VBench venv and the DINO weights exist, else (None, why not)."""
    if not cfg.drift.use_dino:
        return None, "disabled (drift.use_dino=false)"
    vb = cfg.vbench
    versions = installed_versions(vb)
    if not versions:
        return None, (f"no VBench venv at '{vb.venv}' (vbench.venv; it is built by the first VBench-Long run, "
                      "see README 'Evaluation')")
    cache = cache_dir(vb)
    missing = [(w, weight_path(w, cache)) for w in DINO_WEIGHTS if not weight_path(w, cache).exists()]
    if missing:
        return None, "DINO weights missing from the VBench cache:\n" + "\n".join(
            f"    {w.what}: expected at {path}\n        fetch: {w.fetch}" for w, path in missing)
    code, weights = (weight_path(w, cache) for w in DINO_WEIGHTS)
    return DinoCall(venv_python(vb), code, weights, cfg.drift.dino_frame_stride, vb.timeout_seconds), None


def run_dino(call: DinoCall, videos: dict[str, Path], work_dir: Path) -> dict[str, torch.Tensor]:
    """Features of `videos` ({safe name: mp4}) from one subprocess: {name: [ceil(T / stride), D]}."""
    if work_dir.exists():
        shutil.rmtree(work_dir)  # leftovers of an interrupted call
    output_dir = work_dir / "features"
    output_dir.mkdir(parents=True)
    manifest = work_dir / "manifest.json"
    manifest.write_text(json.dumps({check_video_name(name): str(Path(path).resolve()) for name, path in videos.items()}))
    log_path = work_dir / "dino.log"
    with log_path.open("w") as log:
        result = subprocess.run(call.command(manifest, output_dir), stdout=log, stderr=subprocess.STDOUT,
                                timeout=call.timeout_seconds)
    if result.returncode != 0:
        raise DinoRunError(f"dino_extract.py exited with {result.returncode}; log {log_path}:\n{log_path.read_text()[-3000:]}")
    return parse_features(output_dir, list(videos))


def parse_features(output_dir: Path, names: list[str]) -> dict[str, torch.Tensor]:
    features = {}
    for name in names:
        path = output_dir / f"{name}.npy"
        if not path.is_file():
            raise DinoRunError(f"dino_extract.py wrote no features for video '{name}' ({path} is missing)")
        array = np.load(path)
        if array.ndim != 2 or len(array) == 0 or not np.isfinite(array).all():
            raise DinoRunError(f"{path}: expected finite [frames, dim] features, got shape {array.shape}")
        features[name] = torch.from_numpy(array.astype(np.float32))
    return features


def dino_scores(features: torch.Tensor, num_frames: int, fps: float, call: DinoCall, gap_seconds: list[float]) -> dict:
    """features: [ceil(num_frames / stride), D] of one video -> its S(Δ) / D(t) summary (rate fps / stride)."""
    expected = len(range(0, num_frames, call.frame_stride))
    if len(features) != expected:
        raise DinoRunError(f"DINO features have {len(features)} rows for a video of {num_frames} frames; expected "
                           f"{expected} (every {call.frame_stride}th frame): the venv's decoder disagrees with the project's")
    return {"status": "scored", "frame_stride": call.frame_stride,
            **similarity_summary(features, fps / call.frame_stride, gap_seconds)}
