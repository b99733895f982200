"""The scoring job: every video of every run folder scored once, sharded over torchrun ranks and
resumable. Each video's scores go to `<output_folder>/runs/<run_id>/videos/<stem>.json` (written
atomically); a re-run keeps a file whose settings match and rescores nothing else.
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from evaluation.config import EvaluateConfig
from evaluation.dino import DinoCall, DinoRunError, dino_availability, dino_scores, run_dino
from evaluation.run_folder import (VIDEO_FRAMES_PER_LATENT, RunFolderError, RunInfo, read_frames, read_latents,
                                   retrieval_encoder)
from evaluation.vbench_env import VBenchUnavailable, installed_versions, prepare, venv_python
from evaluation.vbench_runner import VBenchCall, run_call
from evaluation.video_scores import latent_scores, pixel_scores
from utils.atomic import atomic_write_text, remove_stale_temporaries
from utils.distributed import DistInfo, barrier, broadcast_from_main, shard
from utils.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
RUNS_DIR = "runs"
ENCODE_CHUNK = 64  # latent frames encoded at once by the retrieval AE


def project_commit() -> str | None:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


@dataclass(frozen=True)
class VideoItem:
    run_index: int
    run: RunInfo
    stem: str

    @property
    def vbench_name(self) -> str:
        """Unique across the report's runs and safe for VBench's clip grouping (no '_')."""
        return f"r{self.run_index}-{self.stem}"


def video_items(runs: list[RunInfo]) -> list[VideoItem]:
    return [VideoItem(i, run, stem) for i, run in enumerate(runs) for stem in run.stems]


def check_distinct(runs: list[RunInfo]) -> None:
    """One run per Table 2 cell: two folders of the same backbone, method and length cannot be ranked."""
    seen: dict[tuple, Path] = {}
    for run in runs:
        key = (run.backbone, run.method, run.length)
        if key in seen:
            raise RunFolderError(f"run folders '{seen[key]}' and '{run.folder}' both hold {key[0]} / {key[1]} / {key[2]}; "
                                 "Table 2 has one run per cell: evaluate them in separate reports (output_folder=...)")
        seen[key] = run.folder


def score_path(output_folder: str | Path, run: RunInfo, stem: str) -> Path:
    return Path(output_folder) / RUNS_DIR / run.run_id / "videos" / f"{stem}.json"


@dataclass(frozen=True)
class VBenchState:
    call: VBenchCall | None
    reason: str | None  # why VBench was not run
    versions: dict  # the VBench venv's package versions

    def settings(self) -> dict:
        if self.call is None:
            return {"status": "not run", "reason": self.reason}
        return {"status": "scored", **self.call.options(), "vbench": self.versions.get("vbench")}


def vbench_state(cfg: EvaluateConfig, info: DistInfo, log: Callable[[str], None]) -> VBenchState:
    """Rank 0 checks (and on first use builds) the VBench environment; every rank gets its verdict."""
    vb = cfg.vbench
    if vb.mode == "skip":
        return VBenchState(None, "disabled (vbench.mode=skip)", {})
    verdict = None
    if info.is_main:
        try:
            prepare(vb, log)
        except VBenchUnavailable as err:
            verdict = str(err)
    verdict = broadcast_from_main(verdict, info)
    if verdict is not None:
        if vb.mode == "required":
            raise VBenchUnavailable(verdict)
        return VBenchState(None, verdict, {})
    return VBenchState(VBenchCall(venv_python(vb), vb), None, installed_versions(vb))


@dataclass(frozen=True)
class DinoState:
    call: DinoCall | None
    reason: str | None  # why the DINO curves were not computed

    def settings(self) -> dict:
        if self.call is None:
            return {"status": "not run", "reason": self.reason}
        return {"status": "scored", **self.call.options()}


def dino_state(cfg: EvaluateConfig, info: DistInfo) -> DinoState:
    """The DINO environment, the same on every rank (the settings of every record must agree)."""
    call, reason = dino_availability(cfg)
    main_reason = broadcast_from_main(reason, info)
    if (main_reason is None) != (reason is None):
        raise DinoRunError(f"rank {info.rank} and rank 0 disagree on the DINO environment: {reason or main_reason}; "
                           "give every node the same vbench.venv and VBench cache")
    return DinoState(call, reason)


def select_ae(runs: list[RunInfo], cfg: EvaluateConfig) -> tuple[bool, str | None, str | None]:
    """(use the AE, its checkpoint (None = demo AE), why not). One encoder for all runs."""
    if not cfg.drift.use_ae:
        return False, None, "disabled (drift.use_ae=false)"
    if cfg.drift.ae_ckpt is not None:
        return True, cfg.drift.ae_ckpt, None
    ckpts = sorted({run.config["model_kwargs"]["ae_ckpt"] for run in runs} - {None})
    if len(ckpts) > 1:
        raise ConfigError(f"the runs use different retrieval encoders {ckpts}; choose one with drift.ae_ckpt=...")
    if ckpts:
        return True, ckpts[0], None
    if all(run.config["model_preset"] == "demo" for run in runs):
        return True, None, None
    return False, None, "no retrieval encoder in the runs' configs; set drift.ae_ckpt=checkpoints/ae_latent_mem.pt"


class Embedder:
    """The retrieval AE per run geometry, built on first use."""

    def __init__(self, ckpt: str | None, device: torch.device):
        self.ckpt, self.device, self.models = ckpt, device, {}

    @torch.no_grad()
    def __call__(self, run: RunInfo, latents: torch.Tensor) -> torch.Tensor:
        """latents: [F, C, H, W] -> [F, D] L2-normalised embeddings (the retrieval descriptor)."""
        if run.run_id not in self.models:
            self.models[run.run_id] = retrieval_encoder(run, self.ckpt, self.device)
        ae = self.models[run.run_id]
        return torch.cat([ae.encode(chunk.to(self.device)).cpu() for chunk in latents.split(ENCODE_CHUNK)])


def item_settings(cfg: EvaluateConfig, vbench: VBenchState, ae: tuple[bool, str | None, str | None],
                  dino: DinoState) -> dict:
    """Everything that determines a video's scores; a stored file with other settings is rescored."""
    use_ae, ckpt, reason = ae
    return {"drift": asdict(cfg.drift), "ae": {"used": use_ae, "ckpt": ckpt, "reason": reason},
            "vbench": vbench.settings(), "dino": dino.settings()}


def finished(path: Path, settings: dict) -> bool:
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text())["settings"] == settings
    except (json.JSONDecodeError, KeyError):
        return False


def score_video(item: VideoItem, cfg: EvaluateConfig, device: torch.device, embedder: Embedder | None,
                ae_reason: str | None, vbench: dict, dino: DinoState, dino_features: torch.Tensor | None,
                settings: dict) -> dict:
    """dino_features: [ceil(T / stride), D] DINO features of the video's frames (None when not run)."""
    run, stem = item.run, item.stem
    frames = read_frames(run.video(stem))
    fps = run.fps
    record = {"run_id": run.run_id, "stem": stem, "settings": settings,
              "provenance": {"project_commit": project_commit()}, "vbench": vbench,
              "pixels": pixel_scores(frames, fps, cfg.drift, device),
              "dino": (dino_scores(dino_features, len(frames), fps, dino.call, cfg.drift.gap_seconds)
                       if dino.call is not None else settings["dino"])}
    latents_path = run.latents(stem)
    if not latents_path.is_file():
        record["latents"] = {"skipped": f"no {latents_path.name} (generate with save_latents=true)"}
    else:
        latents = read_latents(latents_path)
        embeddings = embedder(run, latents) if embedder is not None else None
        record["latents"] = latent_scores(latents, embeddings, fps / VIDEO_FRAMES_PER_LATENT, cfg.drift)
        if embeddings is None:
            record["latents"]["ae_skipped"] = ae_reason
    return record


def vbench_batches(items: list[VideoItem], size: int) -> list[list[VideoItem]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def run_scoring(cfg: EvaluateConfig, runs: list[RunInfo], info: DistInfo, device: torch.device,
                log: Callable[[str], None]) -> dict:
    """Score this rank's share of the videos; returns the report-level settings (VBench status etc.)."""
    vbench = vbench_state(cfg, info, log)
    ae = select_ae(runs, cfg)
    dino = dino_state(cfg, info)
    settings = item_settings(cfg, vbench, ae, dino)
    mine = shard(video_items(runs), info.rank, info.world_size)
    pending = []
    for item in mine:
        path = score_path(cfg.output_folder, item.run, item.stem)
        remove_stale_temporaries(path)
        if not (cfg.skip_existing and finished(path, settings)):
            pending.append(item)
    embedder = Embedder(ae[1], device) if ae[0] else None
    progress = tqdm(total=len(pending), desc="videos scored", disable=not info.is_main)
    for batch_index, batch in enumerate(vbench_batches(pending, cfg.vbench.videos_per_call)):
        scored, features = None, {}
        videos = {item.vbench_name: item.run.video(item.stem) for item in batch}
        if vbench.call is not None:
            work = Path(cfg.output_folder) / "vbench_work" / f"rank{info.rank}-batch{batch_index}"
            scored = run_call(vbench.call, videos, work)
        if dino.call is not None:
            work = Path(cfg.output_folder) / "dino_work" / f"rank{info.rank}-batch{batch_index}"
            features = run_dino(dino.call, videos, work)
        for item in batch:
            result = ({**scored[item.vbench_name], **settings["vbench"]} if scored is not None
                      else settings["vbench"])
            record = score_video(item, cfg, device, embedder, ae[2], result, dino, features.get(item.vbench_name),
                                 settings)
            atomic_write_text(json.dumps(record, indent=1), score_path(cfg.output_folder, item.run, item.stem))
            progress.update()
    progress.close()
    barrier(info)
    return {"settings": settings, "scored": [f"{item.run.run_id}/{item.stem}" for item in pending],
            "kept": [f"{item.run.run_id}/{item.stem}" for item in mine if item not in pending]}
