"""The evaluation config (configs/evaluate.yaml), typed and validated."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

from utils.config import ConfigError, load_config

VBENCH_MODES = ("auto", "skip", "required")  # not "off": YAML reads it as a boolean
VDE_WEIGHTINGS = ("linear", "log")
DEVICES = ("auto", "cpu", "cuda")
# VBench-Long's six dimensions that accept custom prompts (SPEC_NEXT §3.1), in Table 2's column order
VBENCH_DIMENSIONS = ("subject_consistency", "background_consistency", "motion_smoothness", "dynamic_degree",
                     "aesthetic_quality", "imaging_quality")


@dataclass
class VBenchConfig:
    # auto: score when the VBench environment is complete (else the report says why not);
    # required: stop early with what is missing; skip: never run it
    mode: str = "auto"
    repo: str = "third_party/VBench"  # git checkout of Vchitect/VBench at `commit`
    commit: str = "45e79ec"
    venv: str = ".venvs/vbench"  # created on first use with the pinned packages (evaluation/vbench_env.py)
    python: str = "python3.10"  # interpreter the venv is created from
    torch_index_url: str = "https://download.pytorch.org/whl/cu121"
    cache_dir: str | None = None  # VBENCH_CACHE_DIR; None = $VBENCH_CACHE_DIR or ~/.cache/vbench
    dev_flag: bool = True  # fuse in-clip and clip-to-clip consistency (the README's commands)
    dimensions: list[str] = field(default_factory=lambda: list(VBENCH_DIMENSIONS))
    videos_per_call: int = 16  # videos scored per VBench subprocess (one model load per call)
    timeout_seconds: int = 86400


@dataclass
class DriftConfig:
    clip_seconds: float = 2.0  # VBench-Long's clip length; per-clip drift summaries use the same clips
    reference_seconds: float = 1.0  # colour / exposure / sharpness drift against this opening
    gap_seconds: list[float] = field(default_factory=lambda: [1.0, 5.0, 10.0, 20.0])  # S(Δ) reported here
    first_last_seconds: float = 5.0  # first-vs-last drift windows
    vde_chunks: int = 10  # N of the Video Drift Error
    vde_weighting: str = "linear"  # linear: w_i = N - i + 1; log: ln(N - i + 1)
    use_ae: bool = True  # retrieval-AE embedding curves (needs <stem>.latents.pt)
    # one encoder for every run so the curves compare; None = the runs' own model_kwargs.ae_ckpt
    # (the demo AE for demo runs)
    ae_ckpt: str | None = None
    # DINO ViT-B/16 curves where the VBench venv and its DINO weights exist (evaluation/dino.py)
    use_dino: bool = True
    dino_frame_stride: int = 4  # every 4th video frame: the latent frame rate


@dataclass
class EvaluateConfig:
    run_folders: list[str] = field(default_factory=list)
    output_folder: str = "reports/eval"
    skip_existing: bool = True  # resume: keep finished per-video scores whose settings match
    device: str = "auto"  # drift metrics and the retrieval AE (auto: this rank's GPU, else the CPU)
    plot_dpi: int = 100
    vbench: VBenchConfig = field(default_factory=VBenchConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)

    def validate(self) -> None:
        if not self.run_folders:
            raise ConfigError("run_folders is empty; give at least one inference output folder "
                              "(bash evaluate.sh videos/demo/native videos/demo/latentmem)")
        if len(set(self.run_folders)) != len(self.run_folders):
            raise ConfigError(f"run_folders lists a folder twice: {self.run_folders}")
        if self.device not in DEVICES:
            raise ConfigError(f"device '{self.device}' is not one of {list(DEVICES)}")
        vb, dr = self.vbench, self.drift
        if vb.mode not in VBENCH_MODES:
            raise ConfigError(f"vbench.mode '{vb.mode}' is not one of {list(VBENCH_MODES)}")
        unknown = sorted(set(vb.dimensions) - set(VBENCH_DIMENSIONS))
        if unknown or not vb.dimensions:
            raise ConfigError(f"vbench.dimensions {vb.dimensions}: use a non-empty subset of {list(VBENCH_DIMENSIONS)} "
                              "(the dimensions VBench-Long scores for custom prompts)")
        if vb.videos_per_call < 1 or vb.timeout_seconds < 1:
            raise ConfigError("vbench.videos_per_call and vbench.timeout_seconds must be >= 1")
        if dr.clip_seconds <= 0 or dr.reference_seconds <= 0 or dr.first_last_seconds <= 0:
            raise ConfigError("drift.clip_seconds, drift.reference_seconds and drift.first_last_seconds must be > 0")
        if not dr.gap_seconds or min(dr.gap_seconds) <= 0:
            raise ConfigError(f"drift.gap_seconds {dr.gap_seconds} must be a non-empty list of positive seconds")
        if dr.dino_frame_stride < 1:
            raise ConfigError(f"drift.dino_frame_stride must be >= 1, got {dr.dino_frame_stride}")
        if dr.vde_chunks < 2:
            raise ConfigError(f"drift.vde_chunks must be >= 2, got {dr.vde_chunks}")
        if dr.vde_weighting not in VDE_WEIGHTINGS:
            raise ConfigError(f"drift.vde_weighting '{dr.vde_weighting}' is not one of {list(VDE_WEIGHTINGS)}")


def load_evaluate_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> EvaluateConfig:
    return load_config(EvaluateConfig, path, overrides)
