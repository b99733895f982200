"""Save a live video in the inference job's output format: `<stem>.mp4`, `<stem>.context.json`,
`<stem>.context.png`, (`<stem>.latents.pt` with save_latents) and the `<stem>.json` record, written last
and atomically by inference_job's writers.

The mp4 holds the frames the page streamed (no second decode); the record adds the prompt segments as typed
(text, first block, first latent frame, hard cut or not) and the decode time of every block. Stems are
`live-<UTC date>-<time>[-n]`, so a live save never takes an inference run's `0000-0` names.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from inference_job.config import InferenceConfig
from inference_job.video_job import VideoFiles, VideoJob, run_settings, video_record, video_settings, write_context
from live.session import LiveSession
from utils.atomic import atomic_torch_save, atomic_write_text
from utils.dtypes import dtype_name
from utils.video_io import write_video


def free_stem(folder: Path, clock: float) -> str:
    """`live-YYYYmmdd-HHMMSS` of `clock` (UTC), with `-2`, `-3`, ... when a save of that second exists."""
    base = "live-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime(clock))
    stem, n = base, 1
    while (folder / f"{stem}.json").exists() or (folder / f"{stem}.mp4").exists():
        n += 1
        stem = f"{base}-{n}"
    return stem


def segments_of(session: LiveSession) -> list[dict]:
    nf = session.cfg.num_frame_per_block
    return [{"prompt": s.prompt, "start_block": s.start_block, "start_frame": s.start_block * nf, "cut": s.cut}
            for s in session.segments if s.start_block < max(session.blocks_done, 1)]


def save_session(session: LiveSession, cfg: InferenceConfig) -> VideoFiles:
    """Write the video generated so far to `cfg.output_folder`; -> its files (the record last)."""
    if session.blocks_done == 0:
        raise ValueError("no block has been generated yet; start the video before saving it")
    folder = Path(cfg.output_folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = VideoFiles(folder, free_stem(folder, time.time()), cfg.save_latents)
    result = session.result()
    job = VideoJob(prompt_index=0, sample=0, prompt=session.segments[0].prompt, seed=session.seed)
    frames = write_video(files.video, session.chunks)
    if cfg.save_latents:
        atomic_torch_save(result.latents[0].cpu(), files.latents_file)  # [F, C, H, W]
    write_context(job, files, cfg, result)
    segments = segments_of(session)
    dev = session.rollout.device
    settings = {**video_settings(run_settings(cfg, dev.type, dtype_name(session.rollout.dtype)), job), "segments": segments}
    record = {**video_record(job, files, result, frames, sum(session.decode_ms) / 1000, settings), "live": True,
              "segments": segments, "decode_ms_per_block": [round(ms, 3) for ms in session.decode_ms]}
    atomic_write_text(json.dumps(record, indent=1), files.record)
    return files
