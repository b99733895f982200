"""Per-frame retrieval descriptors: `ae` (retrieval encoder), `avg_pool` (spatial mean); `random` needs none."""
from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

DESCRIPTOR_METHODS = ("ae", "avg_pool", "random")


class FrameDescriptor(Protocol):
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """frames: [B, F, C, H, W] clean latents -> [B, F, D]."""


class EncoderDescriptor:
    """L2-normalised embedding of the retrieval autoencoder (ae/model.py)."""

    def __init__(self, encoder: nn.Module):
        self.encoder = encoder

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        param = next(self.encoder.parameters())
        flat = frames.flatten(0, 1).to(param.device, param.dtype)
        return self.encoder.encode(flat).float().unflatten(0, frames.shape[:2])


class AvgPoolDescriptor:
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.float().mean(dim=(-2, -1))
