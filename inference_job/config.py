"""The inference config: one YAML per backbone x method (configs/), typed and validated here.

Key names follow the reference YAMLs (`denoising_step_list`, `num_frame_per_block`,
`model_kwargs.local_attn_size`, `generator_ckpt`, `lora_ckpt`, `adapter`, `data_path`, ...); the
shared keys are pipeline/generation_config.py's, this class adds the keys of the inference job.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

from pipeline.generation_config import GenerationConfig
from utils.config import ConfigError, load_config


@dataclass
class InferenceConfig(GenerationConfig):
    output_folder: str = "videos"
    num_samples: int = 1  # videos per prompt
    skip_existing: bool = False
    save_latents: bool = False

    def validate(self) -> None:
        super().validate()
        if self.num_samples < 1:
            raise ConfigError(f"num_samples must be >= 1, got {self.num_samples}")


def load_inference_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> InferenceConfig:
    """YAML file + `key=value` overrides (dotted keys: `model_kwargs.memory_size=4`) -> validated config."""
    return load_config(InferenceConfig, path, overrides)
