"""Write the tested versions of the project's dependency closure (pip constraints format).

    python -m utils.constraints [--extra test --extra app] [--out constraints.txt]

Walks the installed distributions from this project's requirements (with the given extras) through
their own requirements (markers evaluated for this interpreter), and pins each to the installed
version. Local version labels are dropped (`torch==2.13.0`, not `2.13.0+cpu`), so the same file
serves the CPU and the CUDA wheels of one release.
"""
from __future__ import annotations

import argparse
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from utils.atomic import atomic_write_text

PROJECT = "longlive-rag"
EXTRAS = ("test", "app")  # the extras CI installs (.ci/run)
HEADER = ("# Tested versions of longlive-rag's dependency closure; used as `pip install -c constraints.txt ...`.\n"
          "# Regenerate after an upgrade with `python -m utils.constraints` (README: Reproducible installs).\n")


def _requirements(dist: metadata.Distribution, extras: tuple[str, ...]) -> list[Requirement]:
    out = []
    for line in dist.requires or []:
        req = Requirement(line)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
            out.append(req)
    return out


def dependency_closure(project: str = PROJECT, extras: tuple[str, ...] = EXTRAS) -> dict[str, str]:
    """canonical name -> installed public version of every distribution the project needs here."""
    pinned: dict[str, str] = {}
    todo = [(metadata.distribution(project), extras)]
    while todo:
        dist, dist_extras = todo.pop()
        for req in _requirements(dist, dist_extras):
            name = canonicalize_name(req.name)
            if name in pinned:
                continue
            try:
                dep = metadata.distribution(req.name)
            except metadata.PackageNotFoundError as err:
                raise SystemExit(f"{dist.metadata['Name']} requires '{req}', which is not installed; "
                                 f"install the project first (pip install -e '.[test]')") from err
            pinned[name] = Version(dep.version).public
            todo.append((dep, tuple(req.extras)))
    return pinned


def render(pinned: dict[str, str]) -> str:
    return HEADER + "".join(f"{name}=={version}\n" for name, version in sorted(pinned.items()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--extra", action="append", default=None, help=f"project extras to include (default: {' '.join(EXTRAS)})")
    p.add_argument("--out", type=Path, default=Path("constraints.txt"))
    args = p.parse_args(argv)
    pinned = dependency_closure(PROJECT, tuple(args.extra or EXTRAS))
    atomic_write_text(render(pinned), args.out)
    print(f"{args.out}: {len(pinned)} pinned distributions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
