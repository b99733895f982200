"""Settings of one autoregressive rollout: sampling steps, block size, window and retrieval memory.

Field names and nesting follow the reference YAMLs: the sampling keys are top-level
(`denoising_step_list`, `num_frame_per_block`, ...), the window and memory keys live under
`model_kwargs`. Every config that runs the block loop (inference, corpus generation, replay)
is a RolloutConfig, so these fields and their defaults are written here only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from utils.config import ConfigError
from utils.dtypes import BANK_DTYPES

EVICTION_POLICIES = ("redundant", "oldest", "stride")


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

    @property
    def reserved_memory_frames(self) -> int:
        """Window frames kept for retrieved frames (0 without the retrieval memory)."""
        return self.memory_size if self.use_latentmem else 0

    @property
    def uses_encoder(self) -> bool:
        """Whether this run needs the retrieval autoencoder."""
        return self.use_latentmem and self.compression_method == "ae"

    def validate(self, num_frame_per_block: int) -> None:
        from pipeline.descriptors import DESCRIPTOR_METHODS

        if self.sink_size < 0 or self.sink_size >= self.local_attn_size:
            raise ConfigError(f"model_kwargs.sink_size {self.sink_size} must be in [0, local_attn_size {self.local_attn_size})")
        reserved = self.reserved_memory_frames
        if self.local_attn_size - self.sink_size - reserved < num_frame_per_block:
            raise ConfigError(
                f"local_attn_size {self.local_attn_size} - sink_size {self.sink_size} - memory_size {reserved} "
                f"leaves fewer local frames than num_frame_per_block {num_frame_per_block}"
            )
        if self.use_latentmem:
            if self.memory_size < 1:
                raise ConfigError(f"model_kwargs.memory_size must be >= 1 with use_latentmem, got {self.memory_size}")
            if self.recent_exclude < 0:
                raise ConfigError(f"model_kwargs.recent_exclude must be >= 0, got {self.recent_exclude}")
            if self.compression_method not in DESCRIPTOR_METHODS:
                raise ConfigError(f"model_kwargs.compression_method '{self.compression_method}' is not one of {list(DESCRIPTOR_METHODS)}")
        if self.memory_dtype != "auto" and self.memory_dtype not in BANK_DTYPES:
            raise ConfigError(f"model_kwargs.memory_dtype '{self.memory_dtype}' is not 'auto' or one of {list(BANK_DTYPES)}")
        if self.memory_budget_gb is not None and self.memory_budget_gb <= 0:
            raise ConfigError(f"model_kwargs.memory_budget_gb must be > 0 (or null for no budget), got {self.memory_budget_gb}")
        if self.memory_eviction not in EVICTION_POLICIES:
            raise ConfigError(f"model_kwargs.memory_eviction '{self.memory_eviction}' is not one of {list(EVICTION_POLICIES)}")
        if self.memory_device == "disk" and not self.memory_folder:
            raise ConfigError("model_kwargs.memory_device disk needs model_kwargs.memory_folder: a folder with room for the bank's file")


@dataclass
class RolloutConfig:
    denoising_step_list: list[int] = field(default_factory=lambda: [1000, 750, 500, 250])
    warp_denoising_step: bool = True
    num_frame_per_block: int = 3
    context_noise: int = 0  # timestep of the clean recache pass
    model_kwargs: ModelKwargs = field(default_factory=ModelKwargs)

    def validate(self) -> None:
        if self.num_frame_per_block < 1:
            raise ConfigError(f"num_frame_per_block must be >= 1, got {self.num_frame_per_block}")
        if not self.denoising_step_list or any(not 0 < t <= 1000 for t in self.denoising_step_list):
            raise ConfigError(f"denoising_step_list must be non-empty values in (0, 1000], got {self.denoising_step_list}")
        if not 0 <= self.context_noise < 1000:
            raise ConfigError(f"context_noise must be in [0, 1000), got {self.context_noise}")
        self.model_kwargs.validate(self.num_frame_per_block)
