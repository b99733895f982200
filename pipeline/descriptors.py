"""Per-frame retrieval descriptors: `ae` (retrieval encoder), `avg_pool` (spatial mean), and `oracle` (known
ground truth per frame; only experiments that have it, like the toy world, can build it); `random` needs none."""
from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

DESCRIPTOR_METHODS = ("ae", "avg_pool", "random", "oracle")


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


class GroundTruthDescriptor:
    """The `oracle`: known per-frame vectors (e.g. the toy world's true camera coverage), handed out in
    generation order. It ignores the frames, so it bounds what a descriptor of the frames can retrieve."""

    def __init__(self, vectors: torch.Tensor):
        self.vectors = vectors  # [B, F, D] for every frame the rollout will index
        self.next_frame = 0

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        end = self.next_frame + frames.shape[1]
        if end > self.vectors.shape[1] or frames.shape[0] != self.vectors.shape[0]:
            raise ValueError(f"oracle descriptor holds {list(self.vectors.shape[:2])} (batch, frames) of ground truth; "
                             f"asked for frames {self.next_frame}..{end - 1} of a batch of {frames.shape[0]}")
        out = self.vectors[:, self.next_frame : end].float()
        self.next_frame = end
        return out.to(frames.device)
