"""The latent-corpus generation config (configs/generate_latent*.yaml), typed and validated here.

The backbone, sampling and prompt keys are the inference config's (same names, same
sub-dataclasses, validated by `InferenceConfig.validate`); the keys of corpus generation are
added on top (`sample_ratio` and `max_video_saves` as in the reference YAML). `inference_config()`
is the one conversion to the InferenceConfig that pipeline/build.py and the block loop take.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Sequence

from pipeline.inference_config import AdapterConfig, InferenceConfig, ModelKwargs, TextEncoderConfig, VAEConfig
from pipeline.rollout_config import DTYPES
from utils.config import ConfigError, config_to_dict, load_config

# InferenceConfig keys that corpus generation has no use for (one video per prompt, latents always saved).
INFERENCE_ONLY_KEYS = ("num_samples", "save_latents")
# Keys that do not change any latent value; left out of the config hash so a resumed run may change them.
RUN_ONLY_KEYS = ("output_folder", "skip_existing", "max_video_saves", "save_pt", "device", "vae")


@dataclass
class GenerateLatentConfig:
    # backbone (keys and meaning as in configs/<backbone>_<method>.yaml)
    model_preset: str = "wan2.1-t2v-1.3b"
    generator_ckpt: str | None = None
    use_ema: bool = False
    lora_ckpt: str | None = None
    adapter: AdapterConfig | None = None
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)  # decodes the verification videos only
    # sampling
    denoising_step_list: list[int] = field(default_factory=lambda: [1000, 750, 500, 250])
    warp_denoising_step: bool = True
    num_frame_per_block: int = 3
    context_noise: int = 0
    model_kwargs: ModelKwargs = field(default_factory=ModelKwargs)
    latent_height: int = 60
    latent_width: int = 104
    num_output_frames: int = 90  # latent frames per corpus video
    # prompts: the sample is sorted(random.Random(seed).sample(range(N), max(1, int(N * sample_ratio))))
    data_path: str | None = None
    prompts: list[str] | None = None
    sample_ratio: float = 0.1
    seed: int = 0  # prompt sample; each video's noise seed is derived from (seed, prompt line)
    # corpus
    output_folder: str = "latents/corpus"
    latent_dtype: str = "bfloat16"  # dtype of the stored latents
    save_pt: bool = False  # also write the reference layout pt/latent_XXXXXX.pt ([T, C, H, W] float32)
    max_video_saves: int = 2  # the first videos (by corpus position) also decoded to verification_videos/*.mp4
    skip_existing: bool = True  # keep complete videos of an earlier run (false: regenerate all)
    device: str = "auto"
    dtype: str = "auto"

    def inference_config(self) -> InferenceConfig:
        """The shared keys as an InferenceConfig (what build_components and the block loop read)."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(InferenceConfig)
                  if f.name not in INFERENCE_ONLY_KEYS}
        return InferenceConfig(**shared, num_samples=1, save_latents=True)

    def validate(self) -> None:
        self.inference_config().validate()
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
    (by content, not by file name) and the resolved device type and compute dtype."""
    settings = {k: v for k, v in config_to_dict(cfg).items() if k not in RUN_ONLY_KEYS + ("data_path", "prompts", "dtype")}
    settings["prompts_sha256"] = hashlib.sha256(json.dumps(prompts).encode()).hexdigest()
    settings["device_type"] = device_type
    settings["dtype"] = dtype
    return settings


def config_hash(settings: dict) -> str:
    """16 hex digits identifying `settings` (stored with every corpus video)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
