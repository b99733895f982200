"""YAML -> OmegaConf -> typed dataclass, with `key=value` command-line overrides.

Unknown keys and wrong types are errors that name the key (OmegaConf structured configs do the
type checking); each schema's `validate()` rejects impossible values.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file and key."""


def load_config(schema: type[T], path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> T:
    """Merge `schema` defaults <- YAML file <- `key=value` overrides and return a `schema` instance.

    The instance's `validate()` (if any) runs last.
    """
    source = str(path) if path is not None else "<defaults>"
    try:
        merged = OmegaConf.structured(schema)
        if path is not None:
            merged = OmegaConf.merge(merged, OmegaConf.load(path))
        if overrides:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{source}: {err}") from None
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        try:
            validate()
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
    return cfg


def config_to_dict(cfg) -> dict:
    """Plain-dict view of a config dataclass (for logs and run summaries)."""
    return dataclasses.asdict(cfg)
