"""Score inference run folders: Table 2 (VBench-Long, in its own venv), drift metrics, retrieval diagnostics.

    python evaluate.py --config configs/evaluate.yaml RUN_FOLDER [RUN_FOLDER ...] [key=value ...]
    bash evaluate.sh RUN_FOLDER [RUN_FOLDER ...] [key=value ...]     # the same through torchrun

Videos are sharded over the ranks (each scored once); rank 0 writes the report into output_folder.
A re-run resumes: finished videos with the same settings are not rescored.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from evaluation.config import EvaluateConfig, load_evaluate_config
from evaluation.job import check_distinct, project_commit, run_scoring
from evaluation.report import MissingScoresError, write_report
from evaluation.run_folder import RunFolderError, read_run
from evaluation.vbench_env import VBenchUnavailable
from evaluation.vbench_runner import VBenchRunError
from utils.atomic import atomic_write_text
from utils.config import config_to_dict
from utils.distributed import UNEVEN_WORK_TIMEOUT, DistInfo, finish_distributed, gather_to_main, init_distributed, rank_device
from utils.entry import run_loaded


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/evaluate.yaml", help="YAML config (default: configs/evaluate.yaml)")
    parser.add_argument("args", nargs="*", metavar="RUN_FOLDER | key=value",
                        help="inference output folders, then config overrides (dotted keys)")
    parser.add_argument("--check-config", action="store_true",
                        help="only load and validate the config (evaluate.sh runs this before torchrun)")
    return parser.parse_args(argv)


def overrides_of(args: list[str]) -> list[str]:
    """Run folders are the arguments without '=' (`run_folders=[...]` works too); the rest are overrides."""
    folders = [a for a in args if "=" not in a]
    overrides = [a for a in args if "=" in a]
    return overrides + ([f"run_folders=[{','.join(folders)}]"] if folders else [])


def run(cfg: EvaluateConfig, info: DistInfo) -> None:
    start = time.perf_counter()
    runs = [read_run(folder) for folder in cfg.run_folders]
    check_distinct(runs)
    device = rank_device(cfg.device, info)
    init_distributed(info, device, timeout=UNEVEN_WORK_TIMEOUT)
    log = print if info.is_main else (lambda _: None)
    scoring = run_scoring(cfg, runs, info, device, log)
    per_rank = gather_to_main({"scored": scoring["scored"], "kept": scoring["kept"]}, info)
    if info.is_main:
        scoring["project_commit"] = project_commit()
        path = write_report(cfg, runs, scoring)
        # run facts, not results: the only output file that depends on the process count
        meta = {"run_folders": cfg.run_folders, "world_size": info.world_size, "per_rank": per_rank,
                "wall_seconds": time.perf_counter() - start, "settings": scoring["settings"],
                "project_commit": scoring["project_commit"], "config": config_to_dict(cfg)}
        atomic_write_text(json.dumps(meta, indent=1, default=str), path.parent / "evaluation.json")
        print(f"report: {path}")
        vbench = scoring["settings"]["vbench"]
        print(f"VBench-Long: {vbench['status']}" + ("" if vbench["status"] == "scored" else f"; see {path}:\n{vbench['reason']}"))
        labels = sorted({r.label for r in runs if r.label})
        for label in labels:
            print(label)
    finish_distributed(info)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_loaded(args.config, overrides_of(args.args), load_evaluate_config, run,
                      user_errors=(RunFolderError, VBenchUnavailable, VBenchRunError, MissingScoresError),
                      check_only=args.check_config)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
