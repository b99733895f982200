"""The one place the toy experiment touches the block loop: a method name -> RolloutConfig + context
method (`pipeline.build.build_context_method`) -> `pipeline.rollout.generate` from a ground-truth opening.

Method names: `native`, `infrope`, `deepforcing`, and `latentmem/<descriptor>` with descriptor `ae`,
`avg_pool`, `random` or `oracle` (the true camera coverage of every frame, `toydatasets.toy_world.coverage`).
"""
from __future__ import annotations

import dataclasses

import torch

from ae.model import RetrievalAutoencoder
from pipeline.build import ContextMethod, build_context_method, retrieval_rule
from pipeline.descriptors import GroundTruthDescriptor
from pipeline.retrieval import Retrieval, TopKRetrieval
from pipeline.rollout import RolloutResult, gaussian_noise, generate
from pipeline.rollout_config import METHOD_KEYS, ModelKwargs, RolloutConfig
from toydatasets.toy_world import WorldConfig, coverage
from utils.config import ConfigError
from wan.model import CausalWanModel

METHODS = ("native", "infrope", "deepforcing", "latentmem/ae", "latentmem/avg_pool", "latentmem/random", "latentmem/oracle")


def toy_budget() -> RolloutConfig:
    """The toy's base rollout settings: method latentmem, so that K and R may be set (training samples
    the bank with them); `method_config` turns them into every method's settings."""
    return RolloutConfig(method="latentmem")


def method_config(method: str, base: RolloutConfig) -> RolloutConfig:
    """The rollout settings of `method`: the same budget (window, sink, steps) for every method, and the
    base's options of the other methods (e.g. latentmem's K, R for infrope) back at their defaults."""
    if method not in METHODS:
        raise ConfigError(f"method '{method}' is not one of {list(METHODS)}")
    name, _, descriptor = method.partition("/")
    defaults = ModelKwargs()
    unread = {key: getattr(defaults, key) for owner, keys in METHOD_KEYS.items() if owner != name for key in keys}
    kwargs = dataclasses.replace(base.model_kwargs, **unread, **({"compression_method": descriptor} if descriptor else {}))
    cfg = dataclasses.replace(base, method=name, model_kwargs=kwargs)
    cfg.validate()
    return cfg


def method_retrieval(cfg: RolloutConfig, positions: torch.Tensor, world: WorldConfig, ae: RetrievalAutoencoder | None) -> Retrieval:
    """The retrieval rule of a latentmem method. positions: [B, F, 2] true camera positions (read only by the oracle)."""
    name = cfg.model_kwargs.compression_method
    if name == "oracle":
        return TopKRetrieval(GroundTruthDescriptor(coverage(positions, world)), name)

    def toy_encoder() -> RetrievalAutoencoder:
        if ae is None:
            raise ConfigError("method latentmem/ae needs the toy retrieval AE (runs/toyworld/ae.pt from python -m toyworld.train)")
        return ae

    return retrieval_rule(name, toy_encoder)


def toy_context_method(cfg: RolloutConfig, positions: torch.Tensor, world: WorldConfig,
                       ae: RetrievalAutoencoder | None) -> ContextMethod:
    """A fresh context method per rollout (the oracle descriptor hands out its ground truth once)."""
    return build_context_method(cfg, lambda: method_retrieval(cfg, positions, world, ae))


def rollout_from_opening(
    model: CausalWanModel, method: str, base: RolloutConfig, truth: torch.Tensor, positions: torch.Tensor,
    world: WorldConfig, opening_frames: int, seed: int, ae: RetrievalAutoencoder | None = None,
) -> RolloutResult:
    """truth: [B, F, C, H, W] true views; positions: [B, F, 2]. The first `opening_frames` are given, the rest generated.

    The noise depends only on `seed`, so every method starts from the same noise.
    """
    cfg = method_config(method, base)
    device = model.patch_embedding.weight.device  # the re-noising draws continue on the compute device
    g = torch.Generator(device).manual_seed(seed)
    noise = torch.randn(truth.shape, generator=g, device=device)
    prompt = torch.zeros(truth.shape[0], 1, model.cfg.text_dim)
    return generate(
        model, cfg, noise, prompt, gaussian_noise(g),
        toy_context_method(cfg, positions, world, ae).policy, seed=seed, opening=truth[:, :opening_frames],
    )
