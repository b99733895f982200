"""Typed presets of the UMT5 text encoder and the Wan download's tokenizer location.

No transformers import here, so configs validate without loading it.

`wan.text_encoder` turns a preset into transformers' `UMT5Config` and builds the model.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Byte tokenizer of the demo preset: 256 byte values + padding (0) + end of sequence (1).
BYTE_TOKENIZER_VOCAB = 256 + 2


@dataclass(frozen=True)
class TextEncoderPreset:
    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_layers: int
    num_heads: int
    num_buckets: int = 32
    max_distance: int = 128
    eps: float = 1e-6


TEXT_ENCODER_PRESETS: dict[str, TextEncoderPreset] = {
    "umt5-xxl": TextEncoderPreset(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240,
                                  num_layers=24, num_heads=64),
    # RANDOM weights, byte tokenizer: matches the `demo` DiT preset's text_dim 32.
    "demo": TextEncoderPreset(vocab_size=BYTE_TOKENIZER_VOCAB, d_model=32, d_kv=8, d_ff=64,
                              num_layers=2, num_heads=4),
}


def text_encoder_preset(name: str) -> TextEncoderPreset:
    if name not in TEXT_ENCODER_PRESETS:
        raise KeyError(f"unknown text encoder preset '{name}'; choose one of {sorted(TEXT_ENCODER_PRESETS)}")
    return TEXT_ENCODER_PRESETS[name]


def default_tokenizer_dir(weights: str | Path) -> Path:
    """Where the Wan download keeps the tokenizer, relative to the weights path."""
    weights = Path(weights)
    if weights.is_dir():
        return weights.parent / "tokenizer"
    return weights.parent / "google" / "umt5-xxl"
