"""The run summary `summary.json`: config, seed, versions, random-weight label and per-video timings."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from inference_job.config import InferenceConfig
from pipeline.build import random_weight_label
from utils.atomic import atomic_write_text
from utils.config import config_to_dict
from utils.versions import package_versions

SUMMARY_NAME = "summary.json"


def performance(records: list[dict]) -> dict:
    """Timing over the videos generated in this run (finished videos that were skipped do not count)."""
    done = [r for r in records if r["status"] == "generated"]
    if not done:
        return {"videos_timed": 0}
    blocks = [ms for r in done for ms in r["ms_per_block"]]
    seconds = sum(r["rollout_seconds"] + r["decode_seconds"] for r in done)
    return {
        "videos_timed": len(done),
        "mean_ms_per_block": statistics.mean(blocks),
        "median_ms_per_block": statistics.median(blocks),
        "rollout_latent_frames_per_second": sum(r["num_latent_frames"] for r in done) / sum(r["rollout_seconds"] for r in done),
        "generated_frames_per_second": sum(r["num_video_frames"] for r in done) / seconds,
    }


def run_summary(cfg: InferenceConfig, records: list[dict], random_components: list[str], device: str, dtype: str,
                world_size: int) -> dict:
    records = sorted(records, key=lambda r: (r["prompt_index"], r["sample"]))
    return {
        "label": random_weight_label(random_components),
        "random_weight_components": random_components,
        "seed": cfg.seed,
        "device": device,
        "dtype": dtype,
        "world_size": world_size,
        "versions": package_versions(),
        "num_videos": len(records),
        "num_generated": sum(r["status"] == "generated" for r in records),
        "num_skipped": sum(r["status"] == "skipped" for r in records),
        "performance": performance(records),
        "config": config_to_dict(cfg),
        "videos": records,
    }


def write_run_summary(summary: dict, output_folder: str | Path) -> Path:
    path = Path(output_folder) / SUMMARY_NAME
    atomic_write_text(json.dumps(summary, indent=1), path)
    return path
