"""YAML -> OmegaConf -> typed dataclass, with `key=value` command-line overrides.

Unknown keys and wrong types are errors that name the key (OmegaConf structured configs do the
type checking); each schema's `validate()` rejects impossible values. A YAML file may start from
another one: a top-level `base: other.yaml` (relative to the file) is loaded first and the file's
own keys override it, so a config that differs by a few keys states only those.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")
BASE_KEY = "base"


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file and key."""


def load_yaml(path: str | os.PathLike, _chain: tuple[Path, ...] = ()) -> DictConfig:
    """One YAML file with its `base` chain resolved (the base's keys first, this file's keys on top)."""
    path = Path(path)
    if path.resolve() in _chain:
        raise ConfigError(f"{path}: `base` files form a cycle: {' -> '.join(str(p) for p in _chain + (path.resolve(),))}")
    node = OmegaConf.load(path)
    base = node.pop(BASE_KEY, None) if isinstance(node, DictConfig) else None
    if base is None:
        return node
    base_path = path.parent / str(base)
    if not base_path.is_file():
        raise ConfigError(f"{path}: base file '{base}' not found (looked for {base_path})")
    return OmegaConf.merge(load_yaml(base_path, _chain + (path.resolve(),)), node)


def _merged(schema: type[T], path: str | os.PathLike | None, overrides: Sequence[str]):
    source = str(path) if path is not None else "<defaults>"
    merged = OmegaConf.structured(schema)
    if path is not None:
        merged = OmegaConf.merge(merged, load_yaml(path))
    for override in overrides:  # one at a time, so an error names the override that caused it
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([override]))
        except OmegaConfBaseException as err:
            raise ConfigError(f"command-line override '{override}' (on {source}): {str(err).splitlines()[0]}") from None
    return OmegaConf.to_object(merged)


def _validated(cfg) -> None:
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        validate()


def load_config(schema: type[T], path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> T:
    """Merge `schema` defaults <- YAML file <- `key=value` overrides and return a `schema` instance.

    The instance's `validate()` (if any) runs last. An error names its source: the override that
    caused it (the YAML alone is valid), else the YAML file.
    """
    source = str(path) if path is not None else "<defaults>"
    try:
        cfg = _merged(schema, path, overrides)
    except (OmegaConfBaseException, OSError) as err:
        raise ConfigError(f"{source}: {err}") from None
    try:
        _validated(cfg)
    except ConfigError as err:
        raise ConfigError(f"{_blame(schema, path, overrides, source)}: {err}") from None
    return cfg


def _blame(schema: type[T], path, overrides: Sequence[str], source: str) -> str:
    """The source of a validation error: the overrides that make a valid YAML invalid, else the YAML."""
    if not overrides:
        return source
    try:
        _validated(_merged(schema, path, ()))
    except (ConfigError, OmegaConfBaseException):
        return source
    culprits = []
    for override in overrides:
        try:
            _validated(_merged(schema, path, [override]))
        except ConfigError:
            culprits.append(override)
    named = culprits or list(overrides)  # only their combination fails
    return f"command-line override{'s' if len(named) > 1 else ''} {' '.join(repr(o) for o in named)} (on {source})"


def config_to_dict(cfg) -> dict:
    """Plain-dict view of a config dataclass (for logs and run summaries)."""
    return dataclasses.asdict(cfg)
