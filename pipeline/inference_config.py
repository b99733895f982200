"""The inference config: one YAML per backbone x method (configs/), typed and validated here.

Key names follow the reference YAMLs (`denoising_step_list`, `num_frame_per_block`,
`model_kwargs.local_attn_size`, `generator_ckpt`, `lora_ckpt`, `adapter`, `data_path`, ...).
Validation checks values only; whether weight files exist is checked when they are loaded
(pipeline/build.py), so every config validates on a machine without the weights.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

from pipeline.rollout_config import DTYPES, RolloutConfig
from utils.assets import RAG_DOWNLOAD, require_path
from utils.config import ConfigError, load_config
from wan.model_config import MODEL_PRESETS
from wan.text_encoder_config import TEXT_ENCODER_PRESETS

WAN_DIR = "wan_models/Wan2.1-T2V-1.3B"
DEMO_PRESET = "demo"
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class ModelKwargs:
    local_attn_size: int = 12  # total attention window in latent frames (sink + retrieved + local)
    timestep_shift: float = 5.0
    sink_size: int = 1
    use_latentmem: bool = False
    memory_size: int = 6  # K: retrieved frames per block
    recent_exclude: int = 5  # R: newest bank entries that may not be retrieved
    compression_method: str = "ae"  # retrieval descriptor: ae | avg_pool | random
    ae_ckpt: str | None = None  # retrieval autoencoder (compression_method ae)
    memory_device: str = "auto"  # history bank tier: auto (fastest that fits) | cpu | cuda[:i] | disk
    memory_dtype: str = "auto"  # history bank dtype: auto (= model dtype) | float32 | bfloat16 | float16 | float8_e4m3fn
    memory_budget_gb: float | None = None  # most GB the bank holds on its tier; null: unbounded
    memory_eviction: str = "redundant"  # entry evicted from a full bank: redundant | oldest | stride
    memory_folder: str | None = None  # folder of the disk tier's memory-mapped file
    memory_prefetch: bool = True  # start the next block's gather before the recache pass


@dataclass
class AdapterConfig:
    """LoRA applied on top of `generator_ckpt` (LongLive)."""

    rank: int = 256
    alpha: float = 256.0
    merge: bool = True  # fold the adapter into the base weights (no inference overhead)


@dataclass
class TextEncoderConfig:
    preset: str = "umt5-xxl"  # umt5-xxl | demo (random tiny encoder)
    weights: str | None = f"{WAN_DIR}/models_t5_umt5-xxl-enc-bf16.pth"  # or a Diffusers text_encoder/ folder
    tokenizer: str | None = None  # None: the Wan download's google/umt5-xxl/ beside the weights


@dataclass
class VAEConfig:
    preset: str = "wan2.1"  # wan2.1 | demo (random tiny VAE)
    checkpoint: str | None = f"{WAN_DIR}/Wan2.1_VAE.pth"
    decode_chunk_frames: int = 4  # latent frames decoded at once; bounds decoder memory


@dataclass
class InferenceConfig:
    # backbone
    model_preset: str = "wan2.1-t2v-1.3b"  # wan2.1-t2v-1.3b | demo (random tiny DiT)
    generator_ckpt: str | None = None
    use_ema: bool = False
    lora_ckpt: str | None = None
    adapter: AdapterConfig | None = None
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    # sampling
    denoising_step_list: list[int] = field(default_factory=lambda: [1000, 750, 500, 250])
    warp_denoising_step: bool = True
    num_frame_per_block: int = 3
    context_noise: int = 0
    model_kwargs: ModelKwargs = field(default_factory=ModelKwargs)
    latent_height: int = 60  # 480 px / VAE stride 8
    latent_width: int = 104  # 832 px / VAE stride 8
    num_output_frames: int = 120  # latent frames; the video has 1 + 4 (F - 1) frames
    # run
    data_path: str | None = None  # prompt file, one prompt per line
    prompts: list[str] | None = None  # inline prompts instead of data_path
    output_folder: str = "videos"
    num_samples: int = 1  # videos per prompt
    seed: int = 0
    skip_existing: bool = False
    save_latents: bool = False
    device: str = "auto"  # auto | cpu | cuda (torchrun picks the GPU of each rank)
    dtype: str = "auto"  # auto (bfloat16 on CUDA, float32 on CPU) | float32 | bfloat16 | float16

    @property
    def is_demo(self) -> bool:
        return self.model_preset == DEMO_PRESET

    def rollout_config(self) -> RolloutConfig:
        """The block loop's settings (the one place this conversion happens)."""
        mk = self.model_kwargs
        return RolloutConfig(
            num_frame_per_block=self.num_frame_per_block,
            denoising_step_list=list(self.denoising_step_list),
            warp_denoising_step=self.warp_denoising_step,
            timestep_shift=mk.timestep_shift,
            context_noise=self.context_noise,
            local_attn_size=mk.local_attn_size,
            sink_size=mk.sink_size,
            use_latentmem=mk.use_latentmem,
            memory_size=mk.memory_size,
            recent_exclude=mk.recent_exclude,
            compression_method=mk.compression_method,
            memory_device=mk.memory_device,
            memory_dtype=mk.memory_dtype,
            memory_budget_gb=mk.memory_budget_gb,
            memory_eviction=mk.memory_eviction,
            memory_folder=mk.memory_folder,
            memory_prefetch=mk.memory_prefetch,
        )

    def validate(self) -> None:
        self.rollout_config().validate()
        self._validate_components()
        self._validate_geometry()
        self._validate_run()

    def _validate_components(self) -> None:
        if self.model_preset not in MODEL_PRESETS:
            raise ConfigError(f"model_preset '{self.model_preset}' is not one of {sorted(MODEL_PRESETS)}")
        if self.generator_ckpt is None and not self.is_demo:
            raise ConfigError(f"generator_ckpt is null; only model_preset '{DEMO_PRESET}' may run with random weights")
        if (self.lora_ckpt is None) != (self.adapter is None):
            raise ConfigError("lora_ckpt and adapter go together: set both (LoRA file + adapter.rank/alpha) or neither")
        if self.adapter is not None and (self.adapter.rank < 1 or self.adapter.alpha <= 0):
            raise ConfigError(f"adapter.rank must be >= 1 and adapter.alpha > 0, got {self.adapter.rank} / {self.adapter.alpha}")
        mk = self.model_kwargs
        if mk.use_latentmem and mk.compression_method == "ae" and mk.ae_ckpt is None and not self.is_demo:
            raise ConfigError("model_kwargs.ae_ckpt is null but compression_method is 'ae'; set it to checkpoints/ae_latent_mem.pt "
                              "(or choose compression_method avg_pool | random)")
        te = self.text_encoder
        if te.preset not in TEXT_ENCODER_PRESETS:
            raise ConfigError(f"text_encoder.preset '{te.preset}' is not one of {sorted(TEXT_ENCODER_PRESETS)}")
        if te.weights is None and TEXT_ENCODER_PRESETS[te.preset].demo_seed is None:
            raise ConfigError(f"text_encoder.weights is null; preset '{te.preset}' needs its weights file")
        text_dim, d_model = MODEL_PRESETS[self.model_preset].text_dim, TEXT_ENCODER_PRESETS[te.preset].d_model
        if text_dim != d_model:
            raise ConfigError(f"text_encoder.preset '{te.preset}' gives {d_model}-d embeddings but model_preset "
                              f"'{self.model_preset}' expects text_dim {text_dim}")
        if self.vae.decode_chunk_frames < 1:
            raise ConfigError(f"vae.decode_chunk_frames must be >= 1, got {self.vae.decode_chunk_frames}")

    def _validate_geometry(self) -> None:
        nf = self.num_frame_per_block
        if self.num_output_frames < nf or self.num_output_frames % nf:
            raise ConfigError(f"num_output_frames {self.num_output_frames} must be a positive multiple of num_frame_per_block {nf}")
        _, ph, pw = MODEL_PRESETS[self.model_preset].patch_size
        if self.latent_height < ph or self.latent_height % ph or self.latent_width < pw or self.latent_width % pw:
            raise ConfigError(f"latent_height x latent_width {self.latent_height} x {self.latent_width} must be positive "
                              f"multiples of the patch size {ph} x {pw}")

    def _validate_run(self) -> None:
        if (self.data_path is None) == (self.prompts is None):
            raise ConfigError("set exactly one of data_path (a prompt file) and prompts (a list)")
        if self.prompts is not None and (not self.prompts or any(not p.strip() for p in self.prompts)):
            raise ConfigError("prompts must be a non-empty list of non-empty strings")
        if self.num_samples < 1:
            raise ConfigError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if self.device not in DEVICES:
            raise ConfigError(f"device '{self.device}' is not one of {list(DEVICES)}")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ConfigError(f"dtype '{self.dtype}' is not 'auto' or one of {list(DTYPES)}")


def load_inference_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> InferenceConfig:
    """YAML file + `key=value` overrides (dotted keys: `model_kwargs.memory_size=4`) -> validated config."""
    return load_config(InferenceConfig, path, overrides)


def read_prompts(cfg: InferenceConfig) -> list[str]:
    """The run's prompts in order: the inline list, or the non-empty lines of `data_path`."""
    if cfg.prompts is not None:
        return list(cfg.prompts)
    path = require_path(cfg.data_path, "prompt file (data_path)", RAG_DOWNLOAD)
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ConfigError(f"data_path '{path}' holds no prompts")
    return prompts
