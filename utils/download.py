"""Fetch exactly the released files that the chosen configs read, into the paths the configs use.

    python -m utils.download TARGET [TARGET ...] [--root .] [--dry-run]

TARGET is a backbone (causal_forcing, self_forcing, longlive: both of its configs, native and
latentmem), generate_latent (the corpus config), toy_data (the toy latent videos for AE training),
all, or a config file path. Files come from two Hugging Face repositories through huggingface_hub:
the UMT5 text encoder, its tokenizer folder and the VAE from Wan-AI/Wan2.1-T2V-1.3B (not its
diffusion weights: the backbone checkpoints replace them), everything else from
qixinhu11/LongLive-RAG. Complete files are skipped and interrupted downloads resume (huggingface_hub
keeps partial files under ROOT/<folder>/.cache/huggingface).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path, PurePosixPath

REPO = Path(__file__).resolve().parents[1]
WAN_REPO = "Wan-AI/Wan2.1-T2V-1.3B"
RAG_REPO = "qixinhu11/LongLive-RAG"
# where each repository's files land (relative to --root), so that its paths equal the configs'
LOCAL_DIRS = {WAN_REPO: "wan_models/Wan2.1-T2V-1.3B", RAG_REPO: "."}
# released folders as the configs name them -> their repository
SOURCES = {"wan_models/Wan2.1-T2V-1.3B": WAN_REPO, "checkpoints": RAG_REPO, "toydatasets": RAG_REPO}
BACKBONES = ("causal_forcing", "self_forcing", "longlive")
TOY_DATA = "toydatasets/latent_*.pt"


def target_configs(target: str) -> list[Path]:
    """Config files of a target name, or the target itself when it is a config path."""
    if target in BACKBONES:
        return [REPO / "configs" / f"{target}_{method}.yaml" for method in ("native", "latentmem")]
    if target == "generate_latent":
        return [REPO / "configs" / "generate_latent.yaml"]
    if target == "all":  # toy_data is added by selection()
        return [c for b in (*BACKBONES, "generate_latent") for c in target_configs(b)]
    if target.endswith((".yaml", ".yml")):
        return [Path(target)]
    raise ValueError(f"unknown download target '{target}'; choose from {[*BACKBONES, 'generate_latent', 'toy_data', 'all']} "
                     "or give a config file")


def config_files(path: Path) -> list[str]:
    """Paths (as written in the config) of every file the config reads; a folder ends with '/'."""
    from pipeline.build import required_assets
    from corpus.config import load_generate_latent_config
    from inference_job.config import load_inference_config

    if path.name.startswith("generate_latent"):
        cfg = load_generate_latent_config(path)
    else:
        cfg = load_inference_config(path)
    return [f"{path}/" if what.startswith("tokenizer folder") else path for path, what, _ in required_assets(cfg)]


def selection(targets: list[str]) -> dict[str, list[str]]:
    """repository -> sorted allow-patterns (file paths inside it; a folder as 'folder/*'). Files outside
    the released folders (the user's own prompt file, ...) are reported and skipped."""
    wanted: set[str] = set()
    for target in targets:
        if target in ("toy_data", "all"):
            wanted.add(TOY_DATA)
        if target != "toy_data":
            for config in target_configs(target):
                wanted.update(config_files(config))
    out: dict[str, set[str]] = {}
    for local in sorted(wanted):
        source = source_of(local)
        if source is None:
            print(f"skipping '{local}': not in a released folder ({', '.join(SOURCES)}), so it is your own file")
            continue
        out.setdefault(source[0], set()).add(source[1])
    return {repo: sorted(patterns) for repo, patterns in sorted(out.items())}


def source_of(local: str) -> tuple[str, str] | None:
    """A config path (relative to the root) -> (repository, allow-pattern inside it); None if not released."""
    path = PurePosixPath(local)
    for folder, repo in SOURCES.items():
        if path.is_relative_to(folder):
            rel = path.relative_to(LOCAL_DIRS[repo])
            return repo, f"{rel}/*" if local.endswith("/") else str(rel)
    return None


def local_dir(root: Path, repo: str) -> Path:
    return root / LOCAL_DIRS[repo]


def fetch(targets: list[str], root: Path, download: Callable[..., object] | None = None) -> dict[str, list[str]]:
    """Download the selection of `targets` below `root` with `download` (huggingface_hub.snapshot_download)."""
    if download is None:
        from huggingface_hub import snapshot_download as download
    chosen = selection(targets)
    for repo, patterns in chosen.items():
        print(f"{repo} -> {local_dir(root, repo)}: {', '.join(patterns)}", flush=True)
        download(repo_id=repo, local_dir=str(local_dir(root, repo)), allow_patterns=patterns)
    return chosen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("targets", nargs="+", metavar="TARGET")
    p.add_argument("--root", type=Path, default=REPO, help="folder the config paths are relative to (default: the repository)")
    p.add_argument("--dry-run", action="store_true", help="print the selection, download nothing")
    args = p.parse_args(argv)
    try:
        if args.dry_run:
            for repo, patterns in selection(args.targets).items():
                print(f"{repo} -> {local_dir(args.root, repo)}: {', '.join(patterns)}")
        else:
            fetch(args.targets, args.root)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
