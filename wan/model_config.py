"""Typed configuration of the causal Wan DiT, with named presets.

Every shape constant of the backbone (width, depth, heads, text length) lives here and nowhere else.
"""
from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class WanModelConfig:
    patch_size: tuple[int, int, int] = (1, 2, 2)
    text_len: int = 512
    in_dim: int = 16
    dim: int = 1536
    ffn_dim: int = 8960
    freq_dim: int = 256
    text_dim: int = 4096
    out_dim: int = 16
    num_heads: int = 12
    num_layers: int = 30
    qk_norm: bool = True
    cross_attn_norm: bool = True
    eps: float = 1e-6
    rope_max_positions: int = 1024

    def __post_init__(self):
        object.__setattr__(self, "patch_size", tuple(self.patch_size))
        if self.dim % self.num_heads:
            raise ValueError(f"model dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.head_dim % 2 or self.head_dim < 6:
            raise ValueError(f"head_dim {self.head_dim} must be even and >= 6 for 3-axis RoPE")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @classmethod
    def from_dict(cls, d: dict) -> "WanModelConfig":
        """Build from a reference-style dict; keys that describe the model type only are skipped."""
        known = {f.name for f in fields(cls)}
        ignored = {"model_type"}
        unknown = set(d) - known - ignored
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}; expected a subset of {sorted(known)}")
        return cls(**{k: v for k, v in d.items() if k in known})


MODEL_PRESETS: dict[str, WanModelConfig] = {
    "wan2.1-t2v-1.3b": WanModelConfig(),
    # Tiny random-weight model for CPU demos and tests; latent frames [16, 8, 8] -> 16 tokens.
    "demo": WanModelConfig(text_len=16, dim=64, ffn_dim=128, freq_dim=32, text_dim=32, num_heads=4, num_layers=2),
}


def model_preset(name: str) -> WanModelConfig:
    if name not in MODEL_PRESETS:
        raise KeyError(f"unknown model preset '{name}'; choose one of {sorted(MODEL_PRESETS)}")
    return MODEL_PRESETS[name]
