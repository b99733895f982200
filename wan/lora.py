"""LoRA adapters (LongLive) through peft: every Linear inside each transformer block.

The file holds {'generator_lora': peft state dict} or the raw peft state dict
(`base_model.model.blocks.{i}.{module}.lora_{A,B}.weight`). By default the adapter is merged into
the base weights, so inference runs the plain model at no extra cost.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from utils.assets import RAG_DOWNLOAD, require_path
from wan.checkpoint import CheckpointMismatchError, describe_mismatch
from utils.checkpoint_io import load_checkpoint

LORA_TARGET_MODULES = r".*blocks\.\d+\.((self_attn|cross_attn)\.(q|k|v|o)|ffn\.(0|2))"


def read_lora_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    require_path(path, "LoRA checkpoint", RAG_DOWNLOAD)
    ckpt = load_checkpoint(path, "LoRA checkpoint (lora_ckpt)", f"download it again:\n    {RAG_DOWNLOAD}")
    state = ckpt.get("generator_lora", ckpt)
    if not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointMismatchError(f"{path}: expected 'generator_lora' or a peft state dict, found keys {sorted(ckpt)[:8]}")
    return state


def apply_lora(model: nn.Module, path: str | os.PathLike, rank: int, alpha: float, merge: bool = True) -> nn.Module:
    """Load the LoRA file into `model`; returns the merged plain model, or the model with live adapters."""
    # peft takes ~5 s to import; only LoRA runs pay for it.
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    state = read_lora_state(path)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=LORA_TARGET_MODULES)
    peft_model = get_peft_model(model, config)
    expected = {k: v.shape for k, v in get_peft_model_state_dict(peft_model).items()}
    report = describe_mismatch(path, expected, state)
    if report:
        raise CheckpointMismatchError(f"{report}\n(LoRA rank {rank}, alpha {alpha}: check lora rank/alpha in the config)")
    with torch.no_grad():
        set_peft_model_state_dict(peft_model, {k: v.to(next(model.parameters()).dtype) for k, v in state.items()})
    if merge:
        return peft_model.merge_and_unload()
    return peft_model.base_model.model
