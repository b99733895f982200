"""One VBench-Long call: stage videos under safe names, run eval_long.py in the VBench venv as a
subprocess, and parse its result file into per-video and per-clip scores.

eval_long.py writes `<output_path>/results_<time>_eval_results.json`: {dimension: result}, where
result is [run mean, per-clip list, per-video list] for most dimensions, and [run mean, per-video
list] for subject / background consistency (their per-video scores fuse in-clip and clip-to-clip
scores). List items are {"video_path": ..., "video_results": score}. Clip files are
`split_clip/<video>/<video>_<NNN>.mp4`. Imaging quality is MUSIQ on a 0-100 scale per clip and per
video (long mode divides only the run mean by 100); it is divided by 100 here.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from evaluation.clips import check_video_name, group_clip_scores, video_means
from evaluation.config import VBenchConfig
from evaluation.vbench_env import ENTRY_POINT, cache_dir

RESULT_GLOB = "*_eval_results.json"
SCALE = {"imaging_quality": 0.01}


class VBenchRunError(RuntimeError):
    """eval_long.py failed or its results do not cover the videos it was given."""


@dataclass(frozen=True)
class VBenchCall:
    python: Path
    cfg: VBenchConfig

    def command(self, videos_dir: Path, output_dir: Path) -> list[str]:
        command = [str(self.python), str(Path(self.cfg.repo).resolve() / ENTRY_POINT),
                   "--videos_path", str(videos_dir), "--mode", "long_custom_input",
                   "--dimension", *self.cfg.dimensions, "--output_path", str(output_dir)]
        return command + (["--dev_flag"] if self.cfg.dev_flag else [])

    def options(self) -> dict:
        """Recorded with every result."""
        return {"mode": "long_custom_input", "dev_flag": self.cfg.dev_flag, "dimensions": list(self.cfg.dimensions),
                "repo_commit": self.cfg.commit, "cache_dir": str(cache_dir(self.cfg))}


def stage_videos(videos: dict[str, Path], work_dir: Path) -> Path:
    """A fresh folder of links `<name>.mp4` -> video (eval_long.py writes split_clip/ beside them)."""
    if work_dir.exists():
        shutil.rmtree(work_dir)  # leftovers of an interrupted call: VBench would reuse stale clips
    videos_dir = work_dir / "videos"
    videos_dir.mkdir(parents=True)
    for name, path in videos.items():
        (videos_dir / f"{check_video_name(name)}.mp4").symlink_to(Path(path).resolve())
    return videos_dir


def run_call(call: VBenchCall, videos: dict[str, Path], work_dir: Path) -> dict[str, dict]:
    """Score `videos` ({safe name: mp4}) with one subprocess; returns parse_results(...)."""
    videos_dir = stage_videos(videos, work_dir)
    output_dir = work_dir / "results"
    output_dir.mkdir()
    env = {**os.environ, "VBENCH_CACHE_DIR": str(cache_dir(call.cfg))}
    log_path = work_dir / "vbench.log"
    with log_path.open("w") as log:
        result = subprocess.run(call.command(videos_dir, output_dir), cwd=Path(call.cfg.repo).resolve(), env=env,
                                stdout=log, stderr=subprocess.STDOUT, timeout=call.cfg.timeout_seconds)
    if result.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise VBenchRunError(f"eval_long.py exited with {result.returncode}; log {log_path}:\n{tail}")
    return parse_results(output_dir, list(videos), call.cfg.dimensions)


def _items_by_stem(items: list[dict]) -> dict[str, float]:
    return {Path(item["video_path"]).stem: float(item["video_results"]) for item in items}


def parse_results(output_dir: Path, names: list[str], dimensions: list[str]) -> dict[str, dict]:
    """{name: {"scores": {dimension: video score}, "clips": {dimension: [clip scores in order]}}}."""
    files = sorted(output_dir.glob(RESULT_GLOB))
    if len(files) != 1:
        raise VBenchRunError(f"expected one {RESULT_GLOB} in {output_dir}, found {[f.name for f in files]}")
    results = json.loads(files[0].read_text())
    parsed = {name: {"scores": {}, "clips": {}} for name in names}
    for dimension in dimensions:
        if dimension not in results:
            raise VBenchRunError(f"{files[0]} has no results for dimension '{dimension}'")
        entry, scale = results[dimension], SCALE.get(dimension, 1.0)
        clips = {clip: score * scale for clip, score in _items_by_stem(entry[1]).items()} if len(entry) == 3 else {}
        # a video's score is the mean of its clips; subject / background report only fused video scores
        per_video = video_means(clips) if clips else {v: s * scale for v, s in _items_by_stem(entry[-1]).items()}
        by_video = group_clip_scores(clips)
        for name in names:
            if name not in per_video:
                raise VBenchRunError(f"{files[0]}: dimension '{dimension}' has no score for video '{name}'")
            parsed[name]["scores"][dimension] = per_video[name]
            if name in by_video:
                parsed[name]["clips"][dimension] = by_video[name]
    return parsed
