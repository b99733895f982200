"""Generate videos with one backbone x method config (configs/*.yaml).

    python inference.py --config configs/demo_latentmem.yaml [key=value ...]
    bash inference.sh demo latentmem [key=value ...]      # the same, launched through torchrun

Overrides use the YAML's dotted key names, e.g. `num_output_frames=60 model_kwargs.memory_size=4`.
Inline prompts are a list, so a comma separates prompts unless the prompt is quoted:
    'prompts=["a fox, running in snow", "a paper boat"]'     (two prompts; unquoted, the first splits in two)
Under torchrun the prompts are split across ranks; rank 0 writes `summary.json` at the end.
"""
from __future__ import annotations

import sys

import torch

from inference_job.config import InferenceConfig, load_inference_config
from inference_job.summary import run_summary, write_run_summary
from inference_job.video_job import VideoJob, run_jobs, run_settings, video_jobs
from pipeline.build import RunSetup, build_components, run_in_output_folder
from pipeline.generation_config import read_prompts
from utils.distributed import UNEVEN_WORK_TIMEOUT, DistInfo, finish_distributed, gather_to_main, init_distributed, shard
from utils.dtypes import dtype_name
from utils.entry import config_main


def build_jobs(cfg: InferenceConfig, info: DistInfo) -> list[VideoJob]:
    """This rank's videos: all samples of every world_size-th prompt."""
    prompts = read_prompts(cfg)
    mine = shard(range(len(prompts)), info.rank, info.world_size)
    return video_jobs(prompts, mine, cfg.num_samples, cfg.seed)


def report(summary: dict, path) -> None:
    perf = summary["performance"]
    print(f"{summary['num_videos']} videos in {path.parent} ({summary['num_generated']} generated, "
          f"{summary['num_skipped']} skipped as finished); summary: {path}")
    if perf["videos_timed"]:
        print(f"{perf['mean_ms_per_block']:.1f} ms per block (mean), {perf['generated_frames_per_second']:.1f} "
              f"video frames per second including VAE decoding, on {summary['device']} {summary['dtype']} "
              f"x {summary['world_size']} process(es)")
    if summary["label"]:
        print(summary["label"])


def run(cfg: InferenceConfig, info: DistInfo) -> None:
    run_in_output_folder(cfg, info, run_locked)


def run_locked(cfg: InferenceConfig, info: DistInfo, setup: RunSetup) -> None:
    init_distributed(info, setup.device, timeout=UNEVEN_WORK_TIMEOUT)
    jobs = build_jobs(cfg, info)
    settings = run_settings(cfg, setup.device.type, dtype_name(setup.dtype))
    records = run_jobs(jobs, cfg, settings, lambda: build_components(cfg, setup.device, setup.dtype, [job.prompt for job in jobs]), progress=info.is_main)
    gathered = gather_to_main(records, info)
    if info.is_main:
        all_records = [record for rank_records in gathered for record in rank_records]
        summary = run_summary(cfg, all_records, setup.random_components, str(setup.device), dtype_name(setup.dtype),
                              info.world_size)
        report(summary, write_run_summary(summary, cfg.output_folder))
    finish_distributed(info)


def main(argv: list[str] | None = None) -> int:
    return config_main(argv, __doc__, "configs/demo_latentmem.yaml", load_inference_config, run)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
