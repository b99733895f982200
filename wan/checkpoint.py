"""Backbone checkpoint loading: the `generator` / `generator_ema` / `model` layouts, strict by default.

Released files hold {'generator' | 'generator_ema' | 'model': {'model.' + name: tensor}}; keys may
also carry `_fsdp_wrapped_module.` fragments from FSDP training.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from utils.assets import RAG_DOWNLOAD, require_path
from utils.checkpoint_io import load_checkpoint

LAYOUT_KEYS = ("generator", "generator_ema", "model")


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's keys or shapes do not match the model it is loaded into."""


def normalize_backbone_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        key = key.replace("_fsdp_wrapped_module.", "")
        if key.startswith("model."):
            key = key[len("model.") :]
        out[key] = value
    return out


def select_state_dict(ckpt: dict, path: str | os.PathLike, use_ema: bool) -> dict[str, torch.Tensor]:
    """Pick the generator weights out of a checkpoint dict."""
    wanted = "generator_ema" if use_ema else "generator"
    for key in (wanted, "model") if use_ema else (wanted, "model", "generator_ema"):
        if key in ckpt and isinstance(ckpt[key], dict):
            return ckpt[key]
    if use_ema and "generator" in ckpt:
        raise CheckpointMismatchError(f"{path}: use_ema=true but the file has no 'generator_ema' entry (found {sorted(ckpt)[:8]}); set use_ema=false")
    if all(torch.is_tensor(v) for v in ckpt.values()):
        return ckpt
    raise CheckpointMismatchError(f"{path}: expected one of {list(LAYOUT_KEYS)} at the top level, found {sorted(ckpt)[:8]}")


def describe_mismatch(path, expected: dict[str, torch.Size], found: dict[str, torch.Tensor], shown: int = 5) -> str | None:
    """A readable report of missing / unexpected / shape-mismatched keys, or None if all agree."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(found[k].shape)} vs model {tuple(expected[k])}" for k in expected if k in found and tuple(found[k].shape) != tuple(expected[k])]
    if not (missing or unexpected or shapes):
        return None
    lines = [f"{path} does not match the model:"]
    for name, items in (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", shapes)):
        if items:
            more = f" (+{len(items) - shown} more)" if len(items) > shown else ""
            lines.append(f"  {len(items)} {name} keys: {', '.join(items[:shown])}{more}")
    return "\n".join(lines)


def load_state_dict_checked(module: nn.Module, state: dict[str, torch.Tensor], path) -> None:
    """Strict load: every parameter and buffer of `module` comes from `state`, nothing else is in it."""
    expected = {k: v.shape for k, v in module.state_dict().items()}
    report = describe_mismatch(path, expected, state)
    if report:
        raise CheckpointMismatchError(report)
    module.load_state_dict(state, strict=True, assign=False)


def load_backbone_checkpoint(model: nn.Module, path: str | os.PathLike, use_ema: bool = False) -> None:
    """Load a backbone checkpoint file into `model` (weights are cast to the model's dtype)."""
    require_path(path, "backbone checkpoint", RAG_DOWNLOAD)
    ckpt = load_checkpoint(path, "backbone checkpoint (generator_ckpt)", f"download it again:\n    {RAG_DOWNLOAD}", mmap=True)
    state = normalize_backbone_keys(select_state_dict(ckpt, path, use_ema))
    load_state_dict_checked(model, state, path)
