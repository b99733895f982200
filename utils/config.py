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


def _merged(schema: type[T], path: str | os.PathLike | None, overrides: Sequence[str]):
    source = str(path) if path is not None else "<defaults>"
    merged = OmegaConf.structured(schema)
    if path is not None:
        merged = OmegaConf.merge(merged, OmegaConf.load(path))
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
    except OmegaConfBaseException as err:
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
