"""Generate a latent corpus (the retrieval AE's training data) with a frozen backbone.

    python generate_latent.py --config configs/generate_latent.yaml [key=value ...]
    bash generate_latent.sh [key=value ...]        # the same, launched through torchrun (NGPU processes)

Overrides use the YAML's dotted key names, e.g. `output_folder=latents/corpus sample_ratio=0.05`.
Every rank samples the same prompts and takes every world_size-th corpus position, so the corpus
does not depend on the number of processes. Re-running completes an interrupted corpus; rank 0
prints and writes `summary.json` at the end.
"""
from __future__ import annotations

import sys
import time

import torch

from corpus.config import GenerateLatentConfig, hashed_settings, load_generate_latent_config
from utils.settings import config_hash
from corpus.folder import claim_corpus_folder, repair_index
from corpus.generation import CorpusRun, run_latent_jobs
from corpus.jobs import latent_jobs
from corpus.summary import corpus_summary, summary_lines, write_corpus_summary
from pipeline.build import RunSetup, build_components, run_in_output_folder
from pipeline.generation_config import read_prompts
from utils.distributed import (UNEVEN_WORK_TIMEOUT, DistInfo, barrier, finish_distributed, gather_to_main, init_distributed,
                               shard)
from utils.dtypes import dtype_name
from utils.entry import config_main
from wan.geometry import LatentGeometry
from wan.model_config import model_preset


def run(cfg: GenerateLatentConfig, info: DistInfo) -> None:
    run_in_output_folder(cfg, info, run_locked)


def run_locked(cfg: GenerateLatentConfig, info: DistInfo, setup: RunSetup) -> None:
    start = time.perf_counter()
    device, run_dtype = setup.device, dtype_name(setup.dtype)
    prompts = read_prompts(cfg)
    settings = hashed_settings(cfg, prompts, device.type, run_dtype)
    chash = config_hash(settings)
    claim_corpus_folder(cfg.output_folder, settings, chash, cfg.skip_existing, info.is_main)
    init_distributed(info, device, timeout=UNEVEN_WORK_TIMEOUT)
    if info.is_main:
        repair_index(cfg.output_folder)
    barrier(info)  # no rank writes before the folder is repaired

    jobs = shard(latent_jobs(prompts, cfg.sample_ratio, cfg.seed), info.rank, info.world_size)
    frame_shape = list(LatentGeometry.of(model_preset(cfg.model_preset), cfg.latent_height, cfg.latent_width).frame_shape)
    corpus = CorpusRun(cfg, chash, frame_shape, device, 
                       lambda: build_components(cfg, device, setup.dtype, [job.prompt for job in jobs]))
    records = run_latent_jobs(corpus, jobs, info.rank, info.world_size)
    gathered = gather_to_main(records, info)
    if info.is_main:
        all_records = [record for rank_records in gathered for record in rank_records]
        summary = corpus_summary(cfg, all_records, chash, setup.random_components, str(device), run_dtype,
                                 info.world_size, time.perf_counter() - start)
        print("\n".join(summary_lines(summary, write_corpus_summary(summary, cfg.output_folder))))
    finish_distributed(info)


def main(argv: list[str] | None = None) -> int:
    return config_main(argv, __doc__, "configs/generate_latent_demo.yaml", load_generate_latent_config, run)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
