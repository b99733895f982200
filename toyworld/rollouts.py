"""The one place the toy experiment touches the block loop: a method name -> RolloutConfig +
descriptor -> `pipeline.rollout.generate` from a ground-truth opening.

Method names: `native`, and `latentmem/<descriptor>` with descriptor `ae`, `avg_pool`, `random` or
`oracle` (the true camera coverage of every frame, `toydatasets.toy_world.coverage`).
"""
from __future__ import annotations

import dataclasses

import torch

from ae.model import RetrievalAutoencoder
from pipeline.descriptors import AvgPoolDescriptor, EncoderDescriptor, FrameDescriptor, GroundTruthDescriptor, NoDescriptor
from pipeline.rollout import RolloutResult, gaussian_noise, generate
from pipeline.rollout_config import RolloutConfig
from toydatasets.toy_world import WorldConfig, coverage
from utils.config import ConfigError
from wan.model import CausalWanModel

METHODS = ("native", "latentmem/ae", "latentmem/avg_pool", "latentmem/random", "latentmem/oracle")


def method_config(method: str, base: RolloutConfig) -> RolloutConfig:
    """The rollout settings of `method`: the same budget (window, sink, K, R, steps) for every method."""
    if method not in METHODS:
        raise ConfigError(f"method '{method}' is not one of {list(METHODS)}")
    if method == "native":
        kwargs = dataclasses.replace(base.model_kwargs, use_latentmem=False)
    else:
        kwargs = dataclasses.replace(base.model_kwargs, use_latentmem=True, compression_method=method.split("/", 1)[1])
    cfg = dataclasses.replace(base, model_kwargs=kwargs)
    cfg.validate()
    return cfg


def method_descriptor(cfg: RolloutConfig, positions: torch.Tensor, world: WorldConfig, ae: RetrievalAutoencoder | None) -> FrameDescriptor | None:
    """positions: [B, F, 2] true camera positions (read only by the oracle)."""
    mk = cfg.model_kwargs
    if not mk.use_latentmem:
        return None
    if mk.compression_method == "ae":
        if ae is None:
            raise ConfigError("method latentmem/ae needs the toy retrieval AE (runs/toyworld/ae.pt from python -m toyworld.train)")
        return EncoderDescriptor(ae)
    if mk.compression_method == "avg_pool":
        return AvgPoolDescriptor()
    if mk.compression_method == "oracle":
        return GroundTruthDescriptor(coverage(positions, world))
    return NoDescriptor()


def rollout_from_opening(
    model: CausalWanModel, method: str, base: RolloutConfig, truth: torch.Tensor, positions: torch.Tensor,
    world: WorldConfig, opening_frames: int, seed: int, ae: RetrievalAutoencoder | None = None,
) -> RolloutResult:
    """truth: [B, F, C, H, W] true views; positions: [B, F, 2]. The first `opening_frames` are given, the rest generated.

    The noise depends only on `seed`, so every method starts from the same noise.
    """
    cfg = method_config(method, base)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(truth.shape, generator=g)
    prompt = torch.zeros(truth.shape[0], 1, model.cfg.text_dim)
    return generate(
        model, cfg, noise, prompt, gaussian_noise(g),
        descriptor=method_descriptor(cfg, positions, world, ae), memory_seed=seed, opening=truth[:, :opening_frames],
    )
