"""Versions of the packages a run depends on (recorded in every summary.json)."""
from __future__ import annotations

import platform
from importlib import metadata

_PACKAGES = ("longlive-rag", "torch", "diffusers", "transformers", "peft", "omegaconf", "imageio", "imageio-ffmpeg")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
