"""Settings of one autoregressive rollout: sampling steps, block size, window, context method and its options.

Field names and nesting follow the reference YAMLs: the sampling keys and `method` are top-level
(`denoising_step_list`, `num_frame_per_block`, ...), the window and method keys live under
`model_kwargs`. Every config that runs the block loop (inference, corpus generation, replay)
is a RolloutConfig, so these fields and their defaults are written here only.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from utils.config import ConfigError
from utils.dtypes import BANK_DTYPES

METHODS = ("native", "latentmem", "infrope", "deepforcing")
EVICTION_POLICIES = ("redundant", "oldest", "stride")
DF_SCORES = ("softmax", "logits")
DF_SCORE_QUERIES = ("both", "current", "clean")
SWITCH_KEYS = ("kv_recache", "global_sink", "global_sink_always", "switch_recache_causal")  # all but infrope
# model_kwargs keys only one method reads; setting one for another method is an error, not a silent no-op
# methods that rotate every frame at its absolute index: a video may not be longer than the model's RoPE table
ABSOLUTE_POSITION_METHODS = ("native",)

METHOD_KEYS = {
    "latentmem": ("memory_size", "recent_exclude", "compression_method", "ae_ckpt", "memory_device", "memory_dtype",
                  "memory_budget_gb", "memory_eviction", "memory_folder", "memory_prefetch", "memory_switch_policy"),
    "infrope": ("infrope_cut_position", "infrope_cut_on_marked_scene", "infrope_flush_newest", "infrope_flush_after_sink"),
    "deepforcing": ("df_recent", "df_score", "df_score_queries", "df_hysteresis"),
}


@dataclass
class ModelKwargs:
    local_attn_size: int = 12  # total attention window in latent frames (sink + context + current block)
    timestep_shift: float = 5.0
    sink_size: int = 1
    # prompt switches (native, latentmem, deepforcing: LongLive's window recache; the defaults reproduce the
    # official LongLive switch, the last two flags fix its bugs; infrope flushes instead)
    kv_recache: bool = True  # re-encode the window's frames under the new prompt at a switch
    global_sink: bool = True  # the sink keeps the first prompt's K/V (false: rewritten from the recached frames)
    global_sink_always: bool = False  # global_sink also before the window is full (official: an early switch rewrites it)
    switch_recache_causal: bool = False  # block-causal recache call (official: unmasked, frames attend later ones)
    # latentmem
    memory_size: int = 6  # K: retrieved frames per block
    recent_exclude: int = 5  # R: newest bank entries that may not be retrieved
    compression_method: str = "ae"  # retrieval descriptor: ae | avg_pool | random | oracle (ground truth; toy world only)
    ae_ckpt: str | None = None  # retrieval autoencoder (compression_method ae)
    memory_device: str = "auto"  # history bank tier: auto (fastest that fits) | cpu | cuda[:i] | disk
    memory_dtype: str = "auto"  # history bank dtype: auto (= model dtype) | float32 | bfloat16 | float16 | float8_e4m3fn
    memory_budget_gb: float | None = None  # most GB the bank holds on its tier; null: unbounded
    memory_eviction: str = "redundant"  # entry evicted from a full bank: redundant | oldest | stride
    memory_folder: str | None = None  # folder of the disk tier's memory-mapped file
    memory_prefetch: bool = True  # start the next block's gather before the recache pass
    memory_switch_policy: str = "scoped"  # bank entries retrievable after a prompt switch: scoped | global | recache_on_retrieve
    # infrope (the defaults reproduce the official code; the flags fix its bugs)
    infrope_cut_position: int = 45  # first temporal position of a block after a hard cut
    infrope_cut_on_marked_scene: bool = False  # `#` cuts into its own scene (official: into the next one)
    infrope_flush_newest: bool = False  # the flush keeps the newest valid frames (official: the last buffer slots)
    infrope_flush_after_sink: bool = False  # flushed copies go after the sink (official: slots 1, 2)
    # deepforcing
    df_recent: int = 2  # clean frames kept uncompressed before the block
    df_score: str = "softmax"  # token importance: softmax (attention probability) | logits (Eq. 7)
    df_score_queries: str = "both"  # scoring queries: both | current (the block at t=1000) | clean (recent frames)
    df_hysteresis: bool = False  # compress to one block less and let it grow back (the paper's 21 -> 16)

    def _validate_latentmem(self, num_frame_per_block: int) -> None:
        from pipeline.descriptors import DESCRIPTOR_METHODS
        from pipeline.memory_switch import MEMORY_SWITCH_POLICIES

        if self.memory_size < 1:
            raise ConfigError(f"model_kwargs.memory_size must be >= 1 with method latentmem, got {self.memory_size}")
        if self.recent_exclude < 0:
            raise ConfigError(f"model_kwargs.recent_exclude must be >= 0, got {self.recent_exclude}")
        if self.compression_method not in DESCRIPTOR_METHODS:
            raise ConfigError(f"model_kwargs.compression_method '{self.compression_method}' is not one of {list(DESCRIPTOR_METHODS)}")
        if self.local_attn_size - self.sink_size - self.memory_size < num_frame_per_block:
            raise ConfigError(
                f"local_attn_size {self.local_attn_size} - sink_size {self.sink_size} - memory_size {self.memory_size} "
                f"leaves fewer local frames than num_frame_per_block {num_frame_per_block}"
            )
        if self.memory_dtype != "auto" and self.memory_dtype not in BANK_DTYPES:
            raise ConfigError(f"model_kwargs.memory_dtype '{self.memory_dtype}' is not 'auto' or one of {list(BANK_DTYPES)}")
        if self.memory_budget_gb is not None and self.memory_budget_gb <= 0:
            raise ConfigError(f"model_kwargs.memory_budget_gb must be > 0 (or null for no budget), got {self.memory_budget_gb}")
        if self.memory_eviction not in EVICTION_POLICIES:
            raise ConfigError(f"model_kwargs.memory_eviction '{self.memory_eviction}' is not one of {list(EVICTION_POLICIES)}")
        if self.memory_switch_policy not in MEMORY_SWITCH_POLICIES:
            raise ConfigError(f"model_kwargs.memory_switch_policy '{self.memory_switch_policy}' is not one of "
                              f"{list(MEMORY_SWITCH_POLICIES)}")
        if self.memory_device == "disk" and not self.memory_folder:
            raise ConfigError("model_kwargs.memory_device disk needs model_kwargs.memory_folder: a folder with room for the bank's file")

    def _validate_deepforcing(self, num_frame_per_block: int) -> None:
        if self.df_recent < 0:
            raise ConfigError(f"model_kwargs.df_recent must be >= 0, got {self.df_recent}")
        if self.df_score not in DF_SCORES:
            raise ConfigError(f"model_kwargs.df_score '{self.df_score}' is not one of {list(DF_SCORES)}")
        if self.df_score_queries not in DF_SCORE_QUERIES:
            raise ConfigError(f"model_kwargs.df_score_queries '{self.df_score_queries}' is not one of {list(DF_SCORE_QUERIES)}")
        if self.df_score_queries == "clean" and self.df_recent == 0:
            raise ConfigError("model_kwargs.df_score_queries 'clean' needs clean frames: df_recent is 0")
        compressed = self.local_attn_size - self.sink_size - self.df_recent - num_frame_per_block
        needed = num_frame_per_block + 1 if self.df_hysteresis else 1
        if compressed < needed:
            raise ConfigError(
                f"local_attn_size {self.local_attn_size} - sink_size {self.sink_size} - df_recent {self.df_recent} - "
                f"num_frame_per_block {num_frame_per_block} leaves {compressed} frames for compressed tokens; need {needed}")

    def validate(self, method: str, num_frame_per_block: int) -> None:
        if self.sink_size < 0 or self.sink_size >= self.local_attn_size:
            raise ConfigError(f"model_kwargs.sink_size {self.sink_size} must be in [0, local_attn_size {self.local_attn_size})")
        if self.local_attn_size - self.sink_size < num_frame_per_block:
            raise ConfigError(f"local_attn_size {self.local_attn_size} - sink_size {self.sink_size} leaves fewer frames "
                              f"than num_frame_per_block {num_frame_per_block}")
        if method == "latentmem":
            self._validate_latentmem(num_frame_per_block)
        if method == "deepforcing":
            self._validate_deepforcing(num_frame_per_block)
        if method == "infrope" and self.infrope_cut_position < self.local_attn_size:
            raise ConfigError(f"model_kwargs.infrope_cut_position {self.infrope_cut_position} must lie beyond the window "
                              f"(local_attn_size {self.local_attn_size}): a cut is a jump in positions")


def _default(name: str):
    f = next(f for f in dataclasses.fields(ModelKwargs) if f.name == name)
    return f.default


@dataclass
class RolloutConfig:
    denoising_step_list: list[int] = field(default_factory=lambda: [1000, 750, 500, 250])
    warp_denoising_step: bool = True
    num_frame_per_block: int = 3
    context_noise: int = 0  # timestep of the clean recache pass
    method: str = "native"  # how the attention window is filled: native | latentmem | infrope | deepforcing
    model_kwargs: ModelKwargs = field(default_factory=ModelKwargs)
    # torch.compile the network calls that follow a block's first call (which assembles the block's context,
    # eagerly): one graph per call type (denoising step, recache pass)
    compile: bool = False

    @property
    def uses_bank(self) -> bool:
        """Whether this run keeps a history bank (the memory plan counts it)."""
        return self.method == "latentmem"

    @property
    def uses_encoder(self) -> bool:
        """Whether this run needs the retrieval autoencoder."""
        return self.method == "latentmem" and self.model_kwargs.compression_method == "ae"

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method '{self.method}' is not one of {list(METHODS)}")
        if self.num_frame_per_block < 1:
            raise ConfigError(f"num_frame_per_block must be >= 1, got {self.num_frame_per_block}")
        if not self.denoising_step_list or any(not 0 < t <= 1000 for t in self.denoising_step_list):
            raise ConfigError(f"denoising_step_list must be non-empty values in (0, 1000], got {self.denoising_step_list}")
        if not 0 <= self.context_noise < 1000:
            raise ConfigError(f"context_noise must be in [0, 1000), got {self.context_noise}")
        for owner, keys in METHOD_KEYS.items():
            for key in keys:
                if owner != self.method and getattr(self.model_kwargs, key) != _default(key):
                    raise ConfigError(f"model_kwargs.{key} is a {owner} option but method is '{self.method}'; "
                                      f"remove the key or set method: {owner}")
        if self.method == "infrope":
            for key in SWITCH_KEYS:
                if getattr(self.model_kwargs, key) != _default(key):
                    raise ConfigError(f"model_kwargs.{key} sets LongLive's window recache at a prompt switch, but method "
                                      "infrope has its own KV flush and RoPE cut (infrope_* keys); remove the key")
        self.model_kwargs.validate(self.method, self.num_frame_per_block)
