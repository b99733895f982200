"""The `main()` of the config-driven entry scripts (inference.py, generate_latent.py, evaluate.py).

`--config FILE key=value ...` -> load (validated) -> run under torchrun or alone; a config or
missing-file error prints one `error:` line on the main rank and exits 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence, TypeVar

from utils.assets import MissingAssetError
from utils.checkpoint_io import CorruptCheckpointError
from utils.config import ConfigError
from utils.locks import FolderInUseError
from utils.distributed import DistInfo, cleanup_distributed, dist_info_from_env

C = TypeVar("C")


def parse_config_args(argv: Sequence[str] | None, doc: str, example: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help=f"YAML config, e.g. {example}")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (dotted keys)")
    parser.add_argument("--check-config", action="store_true",
                        help="only load and validate the config (the launchers run this before torchrun)")
    return parser.parse_args(argv)


def config_main(argv: Sequence[str] | None, doc: str, example: str, load: Callable[[str, Sequence[str]], C],
                run: Callable[[C, DistInfo], None]) -> int:
    """Exit code of one run: 0 done, 2 config or asset error, corrupt checkpoint or an output folder in use."""
    args = parse_config_args(argv, doc, example)
    return run_loaded(args.config, args.overrides, load, run, check_only=args.check_config)


def run_loaded(config: str, overrides: Sequence[str], load: Callable[[str, Sequence[str]], C],
               run: Callable[[C, DistInfo], None], user_errors: tuple[type[Exception], ...] = (),
               check_only: bool = False) -> int:
    """Load the config and run it (`check_only`: only load it); a config, asset, corrupt-checkpoint,
    folder-in-use or other `user_errors` error prints one `error:` line on the main rank and gives exit code 2."""
    info = dist_info_from_env()
    try:
        cfg = load(config, overrides)
        if not check_only:
            run(cfg, info)
    except (ConfigError, MissingAssetError, FolderInUseError, CorruptCheckpointError, *user_errors) as err:
        if info.is_main:
            print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        cleanup_distributed()
    return 0
