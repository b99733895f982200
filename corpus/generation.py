"""Generate one rank's corpus videos: resume check, rollout, atomic corpus write, .pt and mp4.

A video is generated when its latent file is missing, unreadable or holds something else than
this config generates (wrong frame count, other metadata); a complete file that the index does
not list (a writer died between the rename and the index update) is re-listed, not regenerated.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from corpus.config import GenerateLatentConfig
from corpus.files import ExpectedVideo, LatentFiles, latents_problem, pt_problem
from corpus.jobs import LatentJob
from pipeline.build import InferenceComponents
from pipeline.sample import sample_video
from utils import latent_corpus
from utils.atomic import atomic_torch_save
from utils.dtypes import torch_dtype
from utils.video_io import write_video


@dataclass
class CorpusRun:
    """Settings shared by every video of one run."""

    cfg: GenerateLatentConfig
    config_hash: str
    frame_shape: list[int]  # [C, H, W] of one latent frame
    device: torch.device
    parts_factory: Callable[[], InferenceComponents]  # builds the models on first need
    parts: InferenceComponents | None = None

    @property
    def folder(self) -> Path:
        return Path(self.cfg.output_folder)

    def components(self) -> InferenceComponents:
        if self.parts is None:
            self.parts = self.parts_factory()
        return self.parts

    def files(self, job: LatentJob) -> LatentFiles:
        return LatentFiles(self.folder, job.video_id, self.cfg.save_pt, job.position < self.cfg.max_video_saves)

    def expected(self, job: LatentJob) -> ExpectedVideo:
        cfg = self.cfg
        backbone = {"model_preset": cfg.model_preset, "generator_ckpt": cfg.generator_ckpt, "use_ema": cfg.use_ema,
                    "lora_ckpt": cfg.lora_ckpt}
        metadata = {
            "prompt": job.prompt, "prompt_index": job.prompt_index, "position": job.position,
            "seed": job.seed, "backbone": backbone, "config_hash": self.config_hash,
        }
        return ExpectedVideo(latent_corpus.encode_metadata(metadata), cfg.num_output_frames, self.frame_shape, cfg.latent_dtype)


def generate_latents(run: CorpusRun, job: LatentJob) -> torch.Tensor:
    """The clean latents of `job`: [T, C, H, W] on the CPU in the corpus dtype."""
    result = sample_video(job.prompt, job.seed, run.cfg, run.components(), progress=False)
    return result.latents[0].to("cpu", torch_dtype(run.cfg.latent_dtype))


def write_verification_video(run: CorpusRun, files: LatentFiles, latents: torch.Tensor) -> None:
    """Decode the stored latents [T, C, H, W] to `files.video`."""
    vae = run.components().vae
    chunks = (chunk[0] for chunk in vae.decode_chunks(latents[None].to(run.device), run.cfg.vae.decode_chunk_frames))
    write_video(files.video, chunks)


def write_derived_files(run: CorpusRun, files: LatentFiles, expected: ExpectedVideo, regenerated: bool) -> list[Path]:
    """The .pt file and the verification video, made from the stored latents when missing or stale."""
    todo = []
    if files.save_pt and (regenerated or pt_problem(files, expected) is not None):
        todo.append(files.pt)
    if files.save_video and (regenerated or not files.video.exists()):
        todo.append(files.video)
    if not todo:
        return []
    stored = latent_corpus.read_frames(files.latents, 0, expected.num_frames)  # [T, C, H, W] as stored
    if files.pt in todo:
        atomic_torch_save(stored.float(), files.pt)
    if files.video in todo:
        write_verification_video(run, files, stored)
    return todo


def run_latent_job(run: CorpusRun, job: LatentJob, index: dict[str, dict]) -> dict:
    """Bring one video's files up to date; returns its record for the summary."""
    start = time.perf_counter()
    files, expected = run.files(job), run.expected(job)
    files.remove_partial_writes()
    problem = latents_problem(files, expected)
    if problem is None and not run.cfg.skip_existing:
        problem = "skip_existing is false"
    listed = index.get(job.video_id) == expected.index_entry(files)
    written = []
    if problem is not None:
        latent_corpus.write_video(run.folder, job.video_id, generate_latents(run, job), expected.metadata)
        written.append(files.latents)
    elif not listed:
        latent_corpus.add_to_index(run.folder, {job.video_id: expected.index_entry(files)})
    written += write_derived_files(run, files, expected, regenerated=problem is not None)
    return {
        "video_id": job.video_id, "position": job.position, "prompt_index": job.prompt_index,
        "seed": job.seed, "status": "complete" if problem is None else "generated", "reason": problem,
        "relisted": problem is None and not listed, "num_frames": expected.num_frames,
        "files_written": [path.relative_to(run.folder).as_posix() for path in written],
        "bytes_written": sum(path.stat().st_size for path in written),
        "seconds": time.perf_counter() - start,
    }


def run_latent_jobs(run: CorpusRun, jobs: list[LatentJob], rank: int, world_size: int) -> list[dict]:
    """This rank's videos in position order, with its own progress bar."""
    index = latent_corpus.read_index(run.folder)
    records = []
    bar = tqdm(jobs, desc=f"rank {rank}/{world_size}", position=rank, unit="video", dynamic_ncols=True)
    for job in bar:
        records.append(run_latent_job(run, job, index))
        bar.set_postfix(generated=sum(r["status"] == "generated" for r in records), refresh=False)
    bar.close()
    return records
