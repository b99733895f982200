"""Settings of one autoregressive rollout (block size, steps, window, context method and its options).

Field names follow the reference YAMLs (`num_frame_per_block`, `local_attn_size`, ...).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from utils.config import ConfigError

DTYPES = ("float32", "bfloat16", "float16")
METHODS = ("native", "latentmem", "infrope", "deepforcing")
DF_SCORES = ("softmax", "logits")


@dataclass
class RolloutConfig:
    num_frame_per_block: int = 3
    denoising_step_list: list[int] = field(default_factory=lambda: [1000, 750, 500, 250])
    warp_denoising_step: bool = True
    timestep_shift: float = 5.0
    context_noise: int = 0  # timestep of the clean recache pass
    local_attn_size: int = 12  # total attention window in frames (sink + retrieved + local)
    sink_size: int = 1
    method: str = "native"  # how the window is filled: native | latentmem | infrope | deepforcing
    # latentmem
    memory_size: int = 6  # K: retrieved frames per block
    recent_exclude: int = 5  # R: newest bank entries that may not be retrieved
    compression_method: str = "ae"  # retrieval descriptor: ae | avg_pool | random
    memory_device: str = "auto"  # where the history bank lives: auto (= compute device) | cpu | cuda[:i]
    memory_dtype: str = "auto"  # bank dtype: auto (= model dtype) | float32 | bfloat16 | float16
    # infrope (defaults reproduce the official code; the flags fix its bugs)
    infrope_cut_position: int = 45  # first temporal position of a block after a hard cut
    infrope_cut_on_marked_scene: bool = False  # `#` cuts into its own scene (official: the scene after it)
    infrope_flush_newest: bool = False  # flush keeps the newest valid frames (official: last buffer slots)
    infrope_flush_after_sink: bool = False  # flushed copies go after the sink (official: slots 1, 2)
    # deepforcing
    df_recent: int = 2  # clean frames kept uncompressed before the block
    df_score: str = "softmax"  # token importance: softmax (attention probability) | logits (Eq. 7)
    df_score_queries: str = "both"  # scoring queries: both | current (block at t=1000) | clean (recent frames)
    df_hysteresis: bool = False  # compress to one block less and let it grow back (paper's 21 -> 16)

    def reserved_frames(self) -> int:
        """Window frames that are not the sink or the local frames before the block."""
        if self.method == "latentmem":
            return self.memory_size
        if self.method == "deepforcing":
            return self.local_attn_size - self.sink_size - self.df_recent - self.num_frame_per_block
        return 0

    def validate(self) -> None:
        from pipeline.context.deepforcing import SCORE_QUERIES
        from pipeline.descriptors import DESCRIPTOR_METHODS

        if self.method not in METHODS:
            raise ConfigError(f"method '{self.method}' is not one of {list(METHODS)}")
        if self.num_frame_per_block < 1:
            raise ConfigError(f"num_frame_per_block must be >= 1, got {self.num_frame_per_block}")
        if not self.denoising_step_list or any(not 0 < t <= 1000 for t in self.denoising_step_list):
            raise ConfigError(f"denoising_step_list must be non-empty values in (0, 1000], got {self.denoising_step_list}")
        if not 0 <= self.context_noise < 1000:
            raise ConfigError(f"context_noise must be in [0, 1000), got {self.context_noise}")
        if self.sink_size < 0 or self.sink_size >= self.local_attn_size:
            raise ConfigError(f"sink_size {self.sink_size} must be in [0, local_attn_size {self.local_attn_size})")
        if self.method == "latentmem":
            if self.memory_size < 1:
                raise ConfigError(f"memory_size must be >= 1 with method latentmem, got {self.memory_size}")
            if self.recent_exclude < 0:
                raise ConfigError(f"recent_exclude must be >= 0, got {self.recent_exclude}")
            if self.compression_method not in DESCRIPTOR_METHODS:
                raise ConfigError(f"compression_method '{self.compression_method}' is not one of {list(DESCRIPTOR_METHODS)}")
        if self.method == "deepforcing":
            if self.df_recent < 0:
                raise ConfigError(f"df_recent must be >= 0, got {self.df_recent}")
            if self.df_score not in DF_SCORES:
                raise ConfigError(f"df_score '{self.df_score}' is not one of {list(DF_SCORES)}")
            if self.df_score_queries not in SCORE_QUERIES:
                raise ConfigError(f"df_score_queries '{self.df_score_queries}' is not one of {list(SCORE_QUERIES)}")
            needed = self.num_frame_per_block if self.df_hysteresis else 1
            if self.reserved_frames() < needed:
                raise ConfigError(
                    f"local_attn_size {self.local_attn_size} - sink_size {self.sink_size} - df_recent {self.df_recent} - "
                    f"num_frame_per_block {self.num_frame_per_block} leaves {self.reserved_frames()} frames for compressed "
                    f"tokens; need at least {needed}")
        elif self.local_attn_size - self.sink_size - self.reserved_frames() < self.num_frame_per_block:
            raise ConfigError(
                f"local_attn_size {self.local_attn_size} - sink_size {self.sink_size} - memory_size {self.reserved_frames()} "
                f"leaves fewer local frames than num_frame_per_block {self.num_frame_per_block}"
            )
        if self.method == "infrope" and self.infrope_cut_position + self.num_frame_per_block <= self.local_attn_size:
            raise ConfigError(f"infrope_cut_position {self.infrope_cut_position} must lie beyond the window "
                              f"(local_attn_size {self.local_attn_size}) so that a cut is a jump in positions")
        if self.memory_dtype != "auto" and self.memory_dtype not in DTYPES:
            raise ConfigError(f"memory_dtype '{self.memory_dtype}' is not 'auto' or one of {list(DTYPES)}")
