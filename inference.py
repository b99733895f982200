"""Generate videos with one backbone x method config (configs/*.yaml).

    python inference.py --config configs/demo_latentmem.yaml [key=value ...]
    bash inference.sh demo latentmem [key=value ...]      # the same, launched through torchrun

Overrides use the YAML's dotted key names, e.g. `num_output_frames=60 model_kwargs.memory_size=4`.
Under torchrun the prompts are split across ranks; rank 0 writes `summary.json` at the end.
"""
from __future__ import annotations

import argparse
import sys

import torch

from inference_job.config import InferenceConfig, load_inference_config
from inference_job.summary import random_weight_label, run_summary, write_run_summary
from inference_job.video_job import VideoJob, run_jobs, video_jobs
from pipeline.build import build_components, random_weight_components, require_assets
from pipeline.generation_config import read_prompts
from utils.assets import MissingAssetError
from utils.config import ConfigError
from utils.dtypes import compute_dtype, dtype_name
from utils.distributed import (UNEVEN_WORK_TIMEOUT, DistInfo, cleanup_distributed, dist_info_from_env, finish_distributed,
                               gather_to_main, init_distributed, rank_device, shard)
from utils.seeding import seed_everything


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/demo_latentmem.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (dotted keys)")
    return parser.parse_args(argv)


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
    device = rank_device(cfg.device, info)
    dtype = compute_dtype(cfg.dtype, device)
    random_components = random_weight_components(cfg)
    if info.is_main and random_components:
        print(random_weight_label(random_components), flush=True)
    require_assets(cfg)
    seed_everything(cfg.seed)
    init_distributed(info, device, timeout=UNEVEN_WORK_TIMEOUT)
    jobs = build_jobs(cfg, info)
    records = run_jobs(jobs, cfg, lambda: build_components(cfg, device, dtype), progress=info.is_main)
    gathered = gather_to_main(records, info)
    if info.is_main:
        all_records = [record for rank_records in gathered for record in rank_records]
        summary = run_summary(cfg, all_records, random_components, str(device), dtype_name(dtype),
                              info.world_size)
        report(summary, write_run_summary(summary, cfg.output_folder))
    finish_distributed(info)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = dist_info_from_env()
    try:
        cfg = load_inference_config(args.config, args.overrides)
        run(cfg, info)
    except (ConfigError, MissingAssetError) as err:
        if info.is_main:
            print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        cleanup_distributed()
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
