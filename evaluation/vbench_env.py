"""VBench-Long's own environment: a pinned virtualenv, the pinned repo checkout, its weights.

VBench pins packages that clash with the generator's (transformers 4.33, numpy < 2), so the
project never imports it: it runs `vbench2_beta_long/eval_long.py` of a Vchitect/VBench checkout
with the venv's Python, as a subprocess (evaluation/vbench_runner.py). The venv is created on first
use; everything that cannot be installed from a package registry (the repo checkout, the weights:
the GPU machine is offline) is checked before any work starts and reported with where it is
expected and how to fetch it on a machine with access (SPEC_NEXT §3.1).
"""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

from evaluation.config import VBenchConfig

# Measured resolution of vbench==0.1.5 (pip dry run, Python 3.11, 2026-12-01; SPEC_NEXT §3.1).
VBENCH_PACKAGES = ("vbench==0.1.5", "transformers==4.33.2", "tokenizers==0.13.3", "numpy==1.26.4", "timm==1.0.12",
                   "pyiqa==0.1.10", "decord==0.6.0", "openai-clip==1.0.1")
# Imported by vbench2_beta_long but not declared by the wheel; moviepy 2 removed `moviepy.editor`.
VBENCH_EXTRAS = ("dreamsim", "scenedetect[opencv]", "moviepy<2")
# Installed first, from `torch_index_url` (cu121: VBench's CUDA range is 11.6-12.1; sm_90 supported);
# otherwise vbench pulls the newest torch with CUDA 13 wheels.
TORCH_PACKAGES = ("torch==2.5.1", "torchvision==0.20.1")
MARKER = "longlive-rag-vbench.json"  # written after a complete install: a half-built venv is rebuilt
ENTRY_POINT = Path("vbench2_beta_long") / "eval_long.py"


@dataclass(frozen=True)
class Weight:
    what: str
    path: str  # relative to the VBench cache directory, or absolute with ~ (torch hub)
    fetch: str  # how to fetch it on a machine with access


# The weights the six dimensions load at first run (VBench 0.1.5 cache layout under VBENCH_CACHE_DIR).
WEIGHTS = (
    Weight("CLIP ViT-B/32 (background consistency)", "clip_model/ViT-B-32.pt",
           "https://openaipublic.azureedge.net/clip/models/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt"),
    Weight("CLIP ViT-L/14 (aesthetic quality)", "clip_model/ViT-L-14.pt",
           "https://openaipublic.azureedge.net/clip/models/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt"),
    Weight("LAION aesthetic head (aesthetic quality)", "aesthetic_model/emb_reader/sa_0_4_vit_l_14_linear.pth",
           "https://github.com/LAION-AI/aesthetic-predictor/raw/main/sa_0_4_vit_l_14_linear.pth"),
    Weight("DINO ViT-B/16 code (subject consistency)", "dino_model/facebookresearch_dino_main",
           "git clone https://github.com/facebookresearch/dino"),
    Weight("DINO ViT-B/16 weights (subject consistency)", "dino_model/dino_vitbase16_pretrain.pth",
           "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth"),
    Weight("AMT-S (motion smoothness)", "amt_model/amt-s.pth", "https://huggingface.co/lalala125/AMT/resolve/main/amt-s.pth"),
    Weight("RAFT things (dynamic degree)", "raft_model/models/raft-things.pth",
           "https://dl.dropboxusercontent.com/s/4j4z58wuv8o0mfz/models.zip (unzip into raft_model/)"),
    Weight("MUSIQ-SPAQ (imaging quality)", "pyiqa_model/musiq_spaq_ckpt-358bb6af.pth",
           "https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights/musiq_spaq_ckpt-358bb6af.pth"),
    Weight("DINOv2 ViT-B/14 (dev_flag clip-to-clip subject score, torch.hub)", "~/.cache/torch/hub/facebookresearch_dinov2_main",
           "<venv>/bin/python -c \"import torch; torch.hub.load('facebookresearch/dinov2', 'dinov2_vitb14')\""),
)
DEV_FLAG_ONLY = {"DINOv2 ViT-B/14 (dev_flag clip-to-clip subject score, torch.hub)"}


class VBenchUnavailable(RuntimeError):
    """The VBench environment is incomplete; the message lists what is missing and how to get it."""


def cache_dir(cfg: VBenchConfig) -> Path:
    return Path(cfg.cache_dir or os.environ.get("VBENCH_CACHE_DIR") or "~/.cache/vbench").expanduser()


def venv_python(cfg: VBenchConfig) -> Path:
    return Path(cfg.venv) / "bin" / "python"


def weight_path(weight: Weight, cache: Path) -> Path:
    return Path(weight.path).expanduser() if weight.path.startswith("~") else cache / weight.path


def missing_weights(cfg: VBenchConfig) -> list[tuple[Weight, Path]]:
    cache = cache_dir(cfg)
    needed = [w for w in WEIGHTS if cfg.dev_flag or w.what not in DEV_FLAG_ONLY]
    return [(w, weight_path(w, cache)) for w in needed if not weight_path(w, cache).exists()]


def repo_commit(repo: Path) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def repo_problems(cfg: VBenchConfig) -> list[str]:
    repo = Path(cfg.repo)
    fetch = (f"on a machine with access: git clone https://github.com/Vchitect/VBench.git {repo} && "
             f"git -C {repo} checkout {cfg.commit}; copy the folder here (vbench.repo=...)")
    if not (repo / ENTRY_POINT).is_file():
        return [f"VBench repo checkout: '{repo / ENTRY_POINT}' not found (the PyPI wheel lacks "
                f"vbench2_beta_long/configs and VBench_full_info.json, so long mode needs the checkout); {fetch}"]
    commit = repo_commit(repo)
    if commit is None or not commit.startswith(cfg.commit):
        return [f"VBench repo checkout '{repo}' is at commit {commit or '(not a git checkout)'}, expected {cfg.commit}; "
                f"git -C {repo} checkout {cfg.commit}"]
    return []


def problems(cfg: VBenchConfig) -> list[str]:
    """Everything that stops VBench-Long here, except the venv (built on first use)."""
    found = []
    if not torch.cuda.is_available():
        found.append("no CUDA device: VBench-Long's eval_long.py runs on torch.device('cuda') only")
    found += repo_problems(cfg)
    missing = missing_weights(cfg)
    if missing:
        cache = cache_dir(cfg)
        lines = [f"    {w.what}: expected at {path}\n        fetch: {w.fetch}" for w, path in missing]
        found.append(f"VBench weights missing (cache {cache}; set vbench.cache_dir or VBENCH_CACHE_DIR). "
                     "Fetch them on a machine with access into the same layout and copy the folder:\n"
                     + "\n".join(lines))
    return found


def install_commands(cfg: VBenchConfig) -> list[list[str]]:
    python = str(venv_python(cfg))
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check"]
    return [[cfg.python, "-m", "venv", "--clear", cfg.venv],
            pip + ["--upgrade", "pip"],
            pip + ["--index-url", cfg.torch_index_url, *TORCH_PACKAGES],
            pip + [*VBENCH_PACKAGES, *VBENCH_EXTRAS]]


def installed_versions(cfg: VBenchConfig) -> dict:
    marker = Path(cfg.venv) / MARKER
    return json.loads(marker.read_text()) if marker.is_file() else {}


def ensure_venv(cfg: VBenchConfig, log) -> dict:
    """Create the pinned venv if it is absent or half-built; returns the installed versions."""
    versions = installed_versions(cfg)
    if versions:
        return versions
    log(f"creating the VBench venv {cfg.venv} (first use; several GB of downloads from PyPI and {cfg.torch_index_url})")
    for command in install_commands(cfg):
        try:
            result = subprocess.run(command, capture_output=True, text=True)
        except OSError as err:
            raise VBenchUnavailable(f"building the VBench venv failed: cannot run '{command[0]}' ({err}); install "
                                    f"Python 3.10 or point vbench.python at an interpreter") from None
        if result.returncode != 0:
            raise VBenchUnavailable(f"building the VBench venv failed at: {' '.join(command)}\n{result.stderr[-3000:]}\n"
                                    f"Install by hand with the same commands, then write {Path(cfg.venv) / MARKER}")
    freeze = subprocess.run([str(venv_python(cfg)), "-m", "pip", "freeze"], capture_output=True, text=True, check=True)
    versions = dict(line.split("==", 1) for line in freeze.stdout.splitlines() if "==" in line)
    (Path(cfg.venv) / MARKER).write_text(json.dumps(versions, indent=1, sort_keys=True))
    return versions


def prepare(cfg: VBenchConfig, log) -> dict:
    """Check the environment (raising VBenchUnavailable listing every problem), then build the venv."""
    found = problems(cfg)
    if found:
        raise VBenchUnavailable("VBench-Long cannot run:\n" + "\n".join(f"- {p}" for p in found))
    return ensure_venv(cfg, log)
