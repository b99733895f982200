"""Wan's original UMT5 encoder format -> transformers' `UMT5EncoderModel` (key names and config).

Wan ships the text encoder as `models_t5_umt5-xxl-enc-bf16.pth`, a state dict of its own T5 module.
The mapping is one-to-one (no tensor is reshaped): the reference gate branch `ffn.gate.0` is the
GELU-activated input projection `wi_0`, its plain branch `ffn.fc1` is `wi_1`, and every layer keeps
its own relative-position bias table, as UMT5 does.
"""
from __future__ import annotations

import re

from transformers import UMT5Config

# transformers keeps the encoder's input embedding as an alias of `shared.weight`; it is never
# stored separately, so it is neither expected in a converted file nor counted as a parameter.
TIED_ALIASES = ("encoder.embed_tokens.weight",)

_GLOBAL_RENAMES = {
    "token_embedding.weight": "shared.weight",
    "norm.weight": "encoder.final_layer_norm.weight",
}

_LAYER_RENAMES = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}

_LAYER_KEY = re.compile(r"blocks\.(\d+)\.(.+)")


def convert_key(name: str) -> str | None:
    """transformers name of a reference key, or None if the reference key has no counterpart."""
    if name in _GLOBAL_RENAMES:
        return _GLOBAL_RENAMES[name]
    match = _LAYER_KEY.fullmatch(name)
    if match and match.group(2) in _LAYER_RENAMES:
        return f"encoder.block.{match.group(1)}.{_LAYER_RENAMES[match.group(2)]}"
    return None


def convert_wan_t5_state_dict(state_dict: dict) -> dict:
    """Rename a reference state dict to transformers names; tensors are shared, not copied.

    Keys without a counterpart keep their reference name so a strict load reports them as unexpected.
    """
    return {convert_key(k) or k: v for k, v in state_dict.items()}


def umt5_config_from_reference(cfg: dict) -> UMT5Config:
    """UMT5Config equal to a reference T5 encoder config dict (keys as in Wan's `umt5` factory)."""
    if cfg.get("shared_pos", False):
        raise ValueError("reference T5 config has shared_pos=True (one bias table for all layers); "
                         "UMT5 needs a separate relative-position table per layer (shared_pos=False)")
    if cfg["dim_attn"] % cfg["num_heads"]:
        raise ValueError(f"reference T5 config: dim_attn {cfg['dim_attn']} is not divisible by "
                         f"num_heads {cfg['num_heads']}")
    return UMT5Config(
        vocab_size=cfg["vocab_size"],
        d_model=cfg["dim"],
        d_kv=cfg["dim_attn"] // cfg["num_heads"],
        d_ff=cfg["dim_ffn"],
        num_layers=cfg["encoder_layers"],
        num_heads=cfg["num_heads"],
        relative_attention_num_buckets=cfg["num_buckets"],
        relative_attention_max_distance=cfg.get("max_dist", 128),
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        layer_norm_epsilon=cfg["eps"],
    )
