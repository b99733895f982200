"""One video per (prompt, sample): output files, resume check, generation and writing.

Its record JSON is written last: a video counts as finished only when every one of its files
exists. The record holds the settings that determine the video (prompt, seeds, frames, method and
context settings, weights files, resolved device type and dtype); skip_existing keeps a finished
video only when they equal this run's, and otherwise refuses naming the keys that differ.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from inference_job.config import InferenceConfig
from inference_job.context_plot import plot_context
from pipeline.rollout import RolloutResult
from pipeline.sample import sample_seed, sample_video
from pipeline.build import InferenceComponents, weight_fingerprints
from utils.atomic import atomic_torch_save, atomic_write_text, remove_stale_temporaries
from utils.config import config_to_dict
from utils.settings import config_hash, settings_mismatch
from utils.video_io import write_video

# Keys that do not change any video's content (prompts count by content, per video; device and dtype
# count as resolved; compile changes values by float rounding only): a resumed run may change them.
RUN_ONLY_KEYS = ("output_folder", "skip_existing", "num_samples", "save_latents", "data_path", "prompts", "prompt_schedule",
                 "device", "dtype", "compile")


@dataclass(frozen=True)
class VideoJob:
    prompt_index: int
    sample: int
    prompt: str
    seed: int

    @property
    def stem(self) -> str:
        return f"{self.prompt_index:04d}-{self.sample}"


def video_jobs(prompts: list[str], prompt_indices: list[int], num_samples: int, seed: int) -> list[VideoJob]:
    return [VideoJob(i, s, prompts[i], sample_seed(seed, i, s)) for i in prompt_indices for s in range(num_samples)]


@dataclass(frozen=True)
class VideoFiles:
    """Paths of one video's outputs in the output folder."""

    folder: Path
    stem: str
    latents: bool

    @property
    def video(self) -> Path:
        return self.folder / f"{self.stem}.mp4"

    @property
    def latents_file(self) -> Path:
        return self.folder / f"{self.stem}.latents.pt"

    @property
    def context_log(self) -> Path:
        return self.folder / f"{self.stem}.context.json"

    @property
    def context_plot(self) -> Path:
        return self.folder / f"{self.stem}.context.png"

    @property
    def record(self) -> Path:
        return self.folder / f"{self.stem}.json"

    def all(self) -> list[Path]:
        files = [self.video]
        if self.latents:
            files.append(self.latents_file)
        return files + [self.context_log, self.context_plot, self.record]

    def complete(self) -> bool:
        return all(path.exists() for path in self.all())


def run_settings(cfg: InferenceConfig, device_type: str, dtype: str) -> dict:
    """The settings shared by every video of the run: the config without RUN_ONLY_KEYS, the weights files'
    fingerprints, the resolved device type and compute dtype."""
    settings = {k: v for k, v in config_to_dict(cfg).items() if k not in RUN_ONLY_KEYS}
    settings.update(weights=weight_fingerprints(cfg), device_type=device_type, dtype=dtype)
    return json.loads(json.dumps(settings))  # as a record reads it back (lists, not tuples)


def video_settings(run: dict, job: VideoJob) -> dict:
    """Everything that determines `job`'s files."""
    return {**run, "prompt": job.prompt, "video_seed": job.seed}


def video_files(cfg: InferenceConfig, job: VideoJob) -> VideoFiles:
    return VideoFiles(Path(cfg.output_folder), job.stem, cfg.save_latents)


def write_context(job: VideoJob, files: VideoFiles, cfg: InferenceConfig, result: RolloutResult) -> None:
    """The context log (per block: attended frames, positions, tokens; method extras) and its plot."""
    mk = cfg.model_kwargs
    log = {
        "prompt_index": job.prompt_index, "sample": job.sample, "prompt": job.prompt, "seed": job.seed,
        "method": cfg.method, "window": mk.local_attn_size, "sink_size": mk.sink_size,
        "num_frames": cfg.num_output_frames,
        **{k: result.extras[k] for k in ("history_bank", "memory_switch_policy") if k in result.extras},
        "segments": result.segments,  # prompt of each segment; every block's `scene` indexes it
        "switches": [entry["switch"] for entry in result.context_log if entry["switch"]],
        "blocks": result.context_log,
    }
    atomic_write_text(json.dumps(log, indent=1), files.context_log)
    title = f"{files.stem}: {cfg.method}, window {mk.local_attn_size}, sink {mk.sink_size}"
    plot_context(result.context_log, cfg.num_output_frames, files.context_plot, title)


def run_job(job: VideoJob, cfg: InferenceConfig, settings: dict, parts: InferenceComponents, progress: bool) -> dict:
    """Generate and write one video's files; returns its record (also written as `<stem>.json`)."""
    files = video_files(cfg, job)
    for path in files.all():  # leftovers of a killed earlier attempt at this video
        remove_stale_temporaries(path)
    result = sample_video(job.prompt, job.seed, cfg, parts, progress)
    if progress and "history_bank" in result.extras:
        tqdm.write(result.extras["history_bank"])
    start = time.perf_counter()
    # latents: [1, F, C, H, W] on the compute device, where the VAE also lives
    chunks = (chunk[0] for chunk in parts.vae.decode_chunks(result.latents, cfg.vae.decode_chunk_frames))
    frames = write_video(files.video, chunks)
    decode_seconds = time.perf_counter() - start
    if cfg.save_latents:
        atomic_torch_save(result.latents[0].cpu(), files.latents_file)  # [F, C, H, W]
    write_context(job, files, cfg, result)
    record = video_record(job, files, result, frames, decode_seconds, settings)
    atomic_write_text(json.dumps(record, indent=1), files.record)
    return record


def video_record(job: VideoJob, files: VideoFiles, result: RolloutResult, frames: int, decode_seconds: float,
                 settings: dict) -> dict:
    """The `<stem>.json` record of a video of `frames` video frames decoded in `decode_seconds`."""
    rollout_seconds = sum(result.ms_per_block) / 1000
    return {
        "stem": files.stem, "prompt_index": job.prompt_index, "sample": job.sample, "prompt": job.prompt,
        "seed": job.seed, "num_latent_frames": result.latents.shape[1], "num_video_frames": frames,
        "ms_per_block": [round(ms, 3) for ms in result.ms_per_block],
        "mean_ms_per_block": sum(result.ms_per_block) / len(result.ms_per_block),
        "rollout_seconds": rollout_seconds, "decode_seconds": decode_seconds,
        "generated_frames_per_second": frames / (rollout_seconds + decode_seconds),
        "retrieval_blocks": sum(entry.get("retrieval") is not None for entry in result.context_log),
        "files": [path.name for path in files.all()],
        "settings_hash": config_hash(settings), "settings": settings,
    }


def reusable_records(jobs: list[VideoJob], cfg: InferenceConfig, run: dict) -> dict[str, dict]:
    """stem -> record of each finished video that skip_existing keeps; every job is checked before any
    generation, and a finished video made with other settings stops the run naming the keys that differ."""
    if not cfg.skip_existing:
        return {}
    kept = {}
    for job in jobs:
        files = video_files(cfg, job)
        if not files.complete():
            continue
        record, wanted = json.loads(files.record.read_text()), video_settings(run, job)
        if record.get("settings") != wanted:
            raise settings_mismatch(cfg.output_folder, f"video {job.stem}", record.get("settings", {}), wanted,
                                    "skip_existing=false to regenerate its videos with the new settings")
        kept[job.stem] = record
    return kept


def run_jobs(jobs: list[VideoJob], cfg: InferenceConfig, run: dict, parts_factory, progress: bool) -> list[dict]:
    """Run `jobs` in order; with skip_existing, finished videos of the same settings (`run_settings`) are read
    back instead of regenerated.

    `parts_factory()` builds the components on first need, so a fully finished run loads nothing.
    Each returned record has `status` 'generated' or 'skipped'.
    """
    kept = reusable_records(jobs, cfg, run)
    parts, records = None, []
    for job in tqdm(jobs, desc="videos", disable=not progress):
        if job.stem in kept:
            records.append({**kept[job.stem], "status": "skipped"})
            continue
        if parts is None:
            parts = parts_factory()
        records.append({**run_job(job, cfg, video_settings(run, job), parts, progress), "status": "generated"})
    return records
