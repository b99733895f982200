"""The latent-corpus generation config (configs/generate_latent*.yaml), typed and validated here.

The backbone, sampling and prompt keys are pipeline/generation_config.py's (same names, same
sub-dataclasses, same validation); the keys of corpus generation are added on top
(`sample_ratio` and `max_video_saves` as in the reference YAML).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Sequence

from pipeline.build import weight_fingerprints
from pipeline.generation_config import GenerationConfig
from utils.config import ConfigError, config_to_dict, load_config
from utils.dtypes import DTYPES

# Keys that do not change any latent value (compile: by float rounding only); left out of the config hash so a
# resumed run may change them.
RUN_ONLY_KEYS = ("output_folder", "skip_existing", "max_video_saves", "save_pt", "device", "vae", "compile")


@dataclass
class GenerateLatentConfig(GenerationConfig):
    num_output_frames: int = 90  # latent frames per corpus video
    # prompts: the sample is sorted(random.Random(seed).sample(range(N), max(1, int(N * sample_ratio)))); `seed`
    # also derives each video's noise seed from (seed, prompt line)
    sample_ratio: float = 0.1
    # corpus (the VAE decodes the verification videos only)
    output_folder: str = "latents/corpus"
    latent_dtype: str = "bfloat16"  # dtype of the stored latents
    save_pt: bool = False  # also write the reference layout pt/latent_XXXXXX.pt ([T, C, H, W] float32)
    max_video_saves: int = 2  # the first videos (by corpus position) also decoded to verification_videos/*.mp4
    skip_existing: bool = True  # keep complete videos of an earlier run (false: regenerate all)

    def validate(self) -> None:
        super().validate()
        if not 0.0 < self.sample_ratio <= 1.0:
            raise ConfigError(f"sample_ratio must be in (0, 1] (fraction of the prompts to generate), got {self.sample_ratio}")
        if self.max_video_saves < 0:
            raise ConfigError(f"max_video_saves must be >= 0, got {self.max_video_saves}")
        if self.latent_dtype not in DTYPES:
            raise ConfigError(f"latent_dtype '{self.latent_dtype}' is not one of {list(DTYPES)}")
        if not self.output_folder:
            raise ConfigError("output_folder is empty; set the corpus folder, e.g. output_folder=latents/corpus")


def load_generate_latent_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> GenerateLatentConfig:
    """YAML file + `key=value` overrides -> validated config."""
    return load_config(GenerateLatentConfig, path, overrides)


def hashed_settings(cfg: GenerateLatentConfig, prompts: list[str], device_type: str, dtype: str) -> dict:
    """Everything that determines the latent values: the config without RUN_ONLY_KEYS, the prompt list
    (by content, not by file name), the fingerprints of the weights files that shape the latents (the VAE
    only decodes verification videos) and the resolved device type and compute dtype."""
    settings = {k: v for k, v in config_to_dict(cfg).items() if k not in RUN_ONLY_KEYS + ("data_path", "prompts", "dtype")}
    settings["prompts_sha256"] = hashlib.sha256(json.dumps(prompts).encode()).hexdigest()
    settings["weights"] = {k: v for k, v in weight_fingerprints(cfg).items() if k != "vae.checkpoint"}
    settings["device_type"] = device_type
    settings["dtype"] = dtype
    return settings
