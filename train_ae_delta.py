"""Train the retrieval autoencoder of LongLive-RAG (SPEC §2) on latent videos.

    python train_ae_delta.py --config ae/configs/ae_delta.yaml [key=value ...]
    bash train_ae_delta.sh [key=value ...]     # the same through torchrun (NPROC processes per node)

Under torchrun every process joins one DDP run (accelerate; gloo on CPU, nccl on CUDA); on GPUs
`accelerate launch --multi_gpu --num_processes N train_ae_delta.py --config ...` works as well.

Overrides use the config's key names, e.g. `data_dir=latents/corpus epochs=100 batch_size=64`.
A rerun with the same output_dir resumes from its last.pt (`resume=false` starts over).
"""
from __future__ import annotations

import argparse
import logging
import sys

from accelerate import PartialState

from ae.data import LatentDataError
from ae.train import AETrainConfig, train_autoencoder
from utils.assets import MissingAssetError
from utils.checkpoint_io import CorruptCheckpointError
from utils.latent_corpus import CorpusError
from utils.config import ConfigError, load_config
from utils.distributed import dist_info_from_env
from utils.locks import FolderInUseError, hold_folder


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config, e.g. ae/configs/ae_delta.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    parser.add_argument("--check-config", action="store_true",
                        help="only load and validate the config (train_ae_delta.sh runs this before torchrun)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(AETrainConfig, args.config, args.overrides)
        if args.check_config:
            return 0
        # two trainings in one output_dir would overwrite each other's checkpoints
        with hold_folder(cfg.output_dir, "output_dir", enabled=dist_info_from_env().is_main):
            result = train_autoencoder(cfg)
    except (ConfigError, LatentDataError, MissingAssetError, FolderInUseError, CorruptCheckpointError, CorpusError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    state = PartialState()
    if state.is_main_process and result.history:
        last = result.history[-1]
        print(f"epoch {last['epoch']}: train total {last['train']['total']:.4f}, val total {last['val']['total']:.4f}; "
              f"best val total {result.best_val:.4f} at epoch {result.best_epoch} -> {cfg.output_dir}/best.pt")
    # leave the process group together and explicitly: a gloo rank that exits with its process group
    # alive, or tears it down while another rank still works, can abort at exit and fail the job
    state.wait_for_everyone()
    state.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
