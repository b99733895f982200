"""What every generating job reads: backbone components, rollout settings, latent size, prompts, device.

InferenceConfig (inference_job/config.py) and GenerateLatentConfig (corpus/config.py) extend this
class with the keys of their job; pipeline/build.py builds the components from it. Validation
checks values only; whether weight files exist is checked when they are loaded (pipeline/build.py),
so every config validates on a machine without the weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.prompt_schedule import PromptFormat, ScheduleError
from pipeline.rollout_config import ABSOLUTE_POSITION_METHODS, RolloutConfig
from utils.assets import require_user_path
from utils.config import ConfigError
from utils.dtypes import DTYPES
from utils.seeding import DEMO_PRESET, may_use_random_weights
from wan.model_config import MODEL_PRESETS
from wan.text_encoder_config import TEXT_ENCODER_PRESETS

WAN_DIR = "wan_models/Wan2.1-T2V-1.3B"
DEVICES = ("auto", "cpu", "cuda")


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
class GenerationConfig(RolloutConfig):
    # backbone
    model_preset: str = "wan2.1-t2v-1.3b"  # wan2.1-t2v-1.3b | demo (random tiny DiT)
    generator_ckpt: str | None = None
    use_ema: bool = False
    lora_ckpt: str | None = None
    adapter: AdapterConfig | None = None
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    # latent video
    latent_height: int = 60  # 480 px / VAE stride 8
    latent_width: int = 104  # 832 px / VAE stride 8
    num_output_frames: int = 120  # latent frames; the video has 1 + 4 (F - 1) frames
    # prompts and run
    data_path: str | None = None  # prompt file, one prompt per line (or one LongLive JSONL record with switch_frame_indices)
    prompts: list[str] | None = None  # inline prompts instead of data_path
    # one video's prompt schedule, e.g. 'a fox[1s] | an owl[1s#] | a hare'; when set it is the run's only video
    # and takes the place of data_path / prompts (so a command-line override needs nothing else)
    prompt_schedule: str | None = None
    # LongLive: every prompt line is {"prompts": [p0, p1, ...]} and prompt i + 1 starts at the first block at or
    # after latent frame switch_frame_indices[i]
    switch_frame_indices: list[int] | None = None
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda (torchrun picks the GPU of each rank)
    dtype: str = "auto"  # auto (bfloat16 on CUDA, float32 on CPU) | float32 | bfloat16 | float16

    def validate(self) -> None:
        super().validate()
        self._validate_components()
        self._validate_geometry()
        self._validate_run()

    def _validate_components(self) -> None:
        if self.model_preset not in MODEL_PRESETS:
            raise ConfigError(f"model_preset '{self.model_preset}' is not one of {sorted(MODEL_PRESETS)}")
        random_ok = may_use_random_weights(self.model_preset)
        if self.generator_ckpt is None and not random_ok:
            raise ConfigError(f"generator_ckpt is null; only model_preset '{DEMO_PRESET}' may run with random weights")
        if (self.lora_ckpt is None) != (self.adapter is None):
            raise ConfigError("lora_ckpt and adapter go together: set both (LoRA file + adapter.rank/alpha) or neither")
        if self.adapter is not None and (self.adapter.rank < 1 or self.adapter.alpha <= 0):
            raise ConfigError(f"adapter.rank must be >= 1 and adapter.alpha > 0, got {self.adapter.rank} / {self.adapter.alpha}")
        if self.method == "latentmem" and self.model_kwargs.compression_method == "oracle":
            raise ConfigError("model_kwargs.compression_method 'oracle' needs per-frame ground truth, which only the toy-world "
                              "experiment has (python -m toyworld.experiment); choose ae | avg_pool | random")
        if self.uses_encoder and self.model_kwargs.ae_ckpt is None and not random_ok:
            raise ConfigError("model_kwargs.ae_ckpt is null but compression_method is 'ae'; set it to checkpoints/ae_latent_mem.pt "
                              "(or choose compression_method avg_pool | random)")
        te = self.text_encoder
        if te.preset not in TEXT_ENCODER_PRESETS:
            raise ConfigError(f"text_encoder.preset '{te.preset}' is not one of {sorted(TEXT_ENCODER_PRESETS)}")
        if te.weights is None and not may_use_random_weights(te.preset):
            raise ConfigError(f"text_encoder.weights is null; preset '{te.preset}' needs its weights file")
        text_dim, d_model = MODEL_PRESETS[self.model_preset].text_dim, TEXT_ENCODER_PRESETS[te.preset].d_model
        if text_dim != d_model:
            raise ConfigError(f"text_encoder.preset '{te.preset}' gives {d_model}-d embeddings but model_preset "
                              f"'{self.model_preset}' expects text_dim {text_dim}")
        if self.vae.checkpoint is None and not may_use_random_weights(self.vae.preset):
            raise ConfigError(f"vae.checkpoint is null; preset '{self.vae.preset}' needs its checkpoint")
        if self.vae.decode_chunk_frames < 1:
            raise ConfigError(f"vae.decode_chunk_frames must be >= 1, got {self.vae.decode_chunk_frames}")

    def _validate_geometry(self) -> None:
        nf = self.num_frame_per_block
        if self.num_output_frames < nf or self.num_output_frames % nf:
            raise ConfigError(f"num_output_frames {self.num_output_frames} must be a positive multiple of num_frame_per_block {nf}")
        positions = MODEL_PRESETS[self.model_preset].rope_max_positions
        if self.method in ABSOLUTE_POSITION_METHODS and self.num_output_frames > positions:
            raise ConfigError(
                f"num_output_frames {self.num_output_frames}: method {self.method} rotates every frame at its absolute index, "
                f"and model_preset '{self.model_preset}' has {positions} RoPE positions; generate at most {positions // nf * nf} "
                "frames, or use a method with bounded positions (latentmem, infrope, deepforcing)")
        _, ph, pw = MODEL_PRESETS[self.model_preset].patch_size
        if self.latent_height < ph or self.latent_height % ph or self.latent_width < pw or self.latent_width % pw:
            raise ConfigError(f"latent_height x latent_width {self.latent_height} x {self.latent_width} must be positive "
                              f"multiples of the patch size {ph} x {pw}")

    def _validate_run(self) -> None:
        if self.prompt_schedule is not None:
            check_prompt_line(self, self.prompt_schedule, "prompt_schedule")
        elif (self.data_path is None) == (self.prompts is None):
            raise ConfigError("set exactly one of data_path (a prompt file) and prompts (a list), or prompt_schedule")
        if self.prompts is not None and (not self.prompts or any(not p.strip() for p in self.prompts)):
            raise ConfigError("prompts must be a non-empty list of non-empty strings")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if self.device not in DEVICES:
            raise ConfigError(f"device '{self.device}' is not one of {list(DEVICES)}")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ConfigError(f"dtype '{self.dtype}' is not 'auto' or one of {list(DTYPES)}")


def check_prompt_line(cfg: GenerationConfig, line: str, where: str) -> None:
    """Fail now, naming `where`, if `line` is not a valid schedule (pipeline/prompt_schedule.py). LongLive's switch
    indices must fall inside the video; the one-line syntax's durations may outlast it (∞-RoPE: later scenes never play)."""
    indices = None if cfg.switch_frame_indices is None else tuple(cfg.switch_frame_indices)
    try:
        schedule = PromptFormat(cfg.num_frame_per_block, indices).parse(line)
        if indices is not None:
            schedule.check_length(cfg.num_output_frames, cfg.num_frame_per_block)
    except ScheduleError as err:
        raise ScheduleError(f"{where}: {err}") from None


def read_prompts(cfg: GenerationConfig) -> list[str]:
    """The run's prompt lines in order: prompt_schedule, the inline list, or the non-empty lines of `data_path`;
    each checked as a schedule (error naming the file and line)."""
    if cfg.prompt_schedule is not None:
        return [cfg.prompt_schedule]
    if cfg.prompts is not None:
        for i, prompt in enumerate(cfg.prompts):
            check_prompt_line(cfg, prompt, f"prompts[{i}]")
        return list(cfg.prompts)
    path = require_user_path(cfg.data_path, "prompt file (data_path)", "set data_path to a text file with one prompt per line")
    if not path.is_file():
        raise ConfigError(f"data_path '{path}' is a folder; set it to a text file with one prompt per line")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise ConfigError(f"data_path '{path}' is not UTF-8 text (line {line}, byte {err.start}); save the prompt "
                          "file as UTF-8") from None
    numbered = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not numbered:
        raise ConfigError(f"data_path '{path}' holds no prompts")
    for n, line in numbered:
        check_prompt_line(cfg, line, f"data_path '{path}' line {n}")
    return [line for _, line in numbered]
