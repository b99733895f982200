"""Settings of one autoregressive rollout (block size, steps, window, retrieval memory).

Field names follow the reference YAMLs (`num_frame_per_block`, `local_attn_size`, ...).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from utils.config import ConfigError

DTYPES = ("float32", "bfloat16", "float16")
MEMORY_DTYPES = (*DTYPES, "float8_e4m3fn")
EVICTION_POLICIES = ("redundant", "oldest", "stride")


@dataclass
class RolloutConfig:
    num_frame_per_block: int = 3
    denoising_step_list: list[int] = field(default_factory=lambda: [1000, 750, 500, 250])
    warp_denoising_step: bool = True
    timestep_shift: float = 5.0
    context_noise: int = 0  # timestep of the clean recache pass
    local_attn_size: int = 12  # total attention window in frames (sink + retrieved + local)
    sink_size: int = 1
    use_latentmem: bool = False
    memory_size: int = 6  # K: retrieved frames per block
    recent_exclude: int = 5  # R: newest bank entries that may not be retrieved
    compression_method: str = "ae"  # retrieval descriptor: ae | avg_pool | random
    memory_device: str = "auto"  # history bank tier: auto (fastest that fits) | cpu | cuda[:i] | disk
    memory_dtype: str = "auto"  # bank dtype: auto (= model dtype) | float32 | bfloat16 | float16 | float8_e4m3fn
    memory_budget_gb: float | None = None  # most GB the bank holds on its tier; None: unbounded
    memory_eviction: str = "redundant"  # entry evicted from a full bank: redundant | oldest | stride
    memory_folder: str | None = None  # folder of the disk tier's memory-mapped file
    memory_prefetch: bool = True  # start the next block's gather before the recache pass

    def validate(self) -> None:
        from pipeline.descriptors import DESCRIPTOR_METHODS

        if self.num_frame_per_block < 1:
            raise ConfigError(f"num_frame_per_block must be >= 1, got {self.num_frame_per_block}")
        if not self.denoising_step_list or any(not 0 < t <= 1000 for t in self.denoising_step_list):
            raise ConfigError(f"denoising_step_list must be non-empty values in (0, 1000], got {self.denoising_step_list}")
        if not 0 <= self.context_noise < 1000:
            raise ConfigError(f"context_noise must be in [0, 1000), got {self.context_noise}")
        if self.sink_size < 0 or self.sink_size >= self.local_attn_size:
            raise ConfigError(f"sink_size {self.sink_size} must be in [0, local_attn_size {self.local_attn_size})")
        reserved = self.memory_size if self.use_latentmem else 0
        if self.local_attn_size - self.sink_size - reserved < self.num_frame_per_block:
            raise ConfigError(
                f"local_attn_size {self.local_attn_size} - sink_size {self.sink_size} - memory_size {reserved} "
                f"leaves fewer local frames than num_frame_per_block {self.num_frame_per_block}"
            )
        if self.use_latentmem:
            if self.memory_size < 1:
                raise ConfigError(f"memory_size must be >= 1 with use_latentmem, got {self.memory_size}")
            if self.recent_exclude < 0:
                raise ConfigError(f"recent_exclude must be >= 0, got {self.recent_exclude}")
            if self.compression_method not in DESCRIPTOR_METHODS:
                raise ConfigError(f"compression_method '{self.compression_method}' is not one of {list(DESCRIPTOR_METHODS)}")
        if self.memory_dtype != "auto" and self.memory_dtype not in MEMORY_DTYPES:
            raise ConfigError(f"memory_dtype '{self.memory_dtype}' is not 'auto' or one of {list(MEMORY_DTYPES)}")
        if self.memory_budget_gb is not None and self.memory_budget_gb <= 0:
            raise ConfigError(f"memory_budget_gb must be > 0 (or null for no budget), got {self.memory_budget_gb}")
        if self.memory_eviction not in EVICTION_POLICIES:
            raise ConfigError(f"memory_eviction '{self.memory_eviction}' is not one of {list(EVICTION_POLICIES)}")
        if self.memory_device == "disk" and not self.memory_folder:
            raise ConfigError("memory_device disk needs memory_folder: a folder with room for the bank's file")
