"""`<output_folder>/summary.json` of a corpus run: videos, frames, bytes written, seconds per video."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from corpus.config import GenerateLatentConfig
from pipeline.build import random_weight_label
from utils.atomic import atomic_write_text
from utils.config import config_to_dict
from utils.versions import package_versions

SUMMARY_NAME = "summary.json"
GB = 1e9


def corpus_summary(cfg: GenerateLatentConfig, records: list[dict], config_hash: str, random_components: list[str], device: str, dtype: str,
                   world_size: int, wall_seconds: float) -> dict:
    """records: every rank's run_latent_job records. `num_regenerated` counts videos generated over an existing
    file (partial, corrupt, stale or skip_existing=false); seconds per video is over the generated videos."""
    records = sorted(records, key=lambda r: r["position"])
    generated = [r for r in records if r["status"] == "generated"]
    bytes_written = sum(r["bytes_written"] for r in records)
    return {
        "label": random_weight_label(random_components),
        "output_folder": str(cfg.output_folder),
        "config_hash": config_hash,
        "device": device,
        "dtype": dtype,
        "latent_dtype": cfg.latent_dtype,
        "world_size": world_size,
        "num_videos": len(records),
        "num_generated": len(generated),
        "num_regenerated": sum(r["reason"] not in (None, "no latent file") for r in generated),
        "num_complete": len(records) - len(generated),
        "num_relisted": sum(r["relisted"] for r in records),
        "num_frames": sum(r["num_frames"] for r in records),
        "bytes_written": bytes_written,
        "gb_written": bytes_written / GB,
        "seconds_per_video": statistics.mean(r["seconds"] for r in generated) if generated else None,
        "wall_seconds": wall_seconds,
        "versions": package_versions(),
        "config": config_to_dict(cfg),
        "videos": records,
    }


def summary_lines(summary: dict, path: Path) -> list[str]:
    lines = [
        f"{summary['num_videos']} videos ({summary['num_frames']} latent frames) in {summary['output_folder']}: "
        f"{summary['num_generated']} generated ({summary['num_regenerated']} of them replaced an existing file), "
        f"{summary['num_complete']} already complete ({summary['num_relisted']} re-listed in the index)",
        f"{summary['gb_written']:.3f} GB ({summary['bytes_written']} bytes) written in {summary['wall_seconds']:.1f} s on {summary['device']} "
        f"{summary['dtype']} x {summary['world_size']} process(es)"
        + (f", {summary['seconds_per_video']:.2f} s per generated video" if summary["seconds_per_video"] else ""),
        f"summary: {path}",
    ]
    return lines + ([summary["label"]] if summary["label"] else [])


def write_corpus_summary(summary: dict, output_folder: str | Path) -> Path:
    path = Path(output_folder) / SUMMARY_NAME
    atomic_write_text(json.dumps(summary, indent=1) + "\n", path)
    return path
