"""Command line of the toy-world scripts: `--config FILE.yaml` plus `key=value` overrides into a config dataclass."""
from __future__ import annotations

import argparse
from typing import TypeVar

from utils.config import load_config

T = TypeVar("T")


def config_from_argv(schema: type[T], doc: str, example: str, argv: list[str] | None) -> T:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help=f"YAML file with {schema.__name__} keys (default: the dataclass defaults)")
    parser.add_argument("overrides", nargs="*", help=f"key=value overrides, e.g. {example}")
    args = parser.parse_args(argv)
    return load_config(schema, args.config, args.overrides)
