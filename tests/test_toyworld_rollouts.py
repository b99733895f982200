import dataclasses

import pytest
import torch

from pipeline.rollout_config import METHOD_KEYS, ModelKwargs, RolloutConfig
from toydatasets.toy_world import Trajectory, WorldConfig, make_world, views
from toyworld.metrics import first_visits, retrieval_hits
from toyworld.rollouts import METHODS, method_config, rollout_from_opening, toy_budget
from toyworld.train import ToyTrainConfig, build_generator
from utils.config import ConfigError

WORLD = WorldConfig()


def loop_batch(frames: int, worlds=(0, 1)):
    pos = torch.stack([Trajectory("loop", (2 * i, 4), (0, 1 - 2 * i)).positions(WORLD, frames) for i in range(len(worlds))])
    truth = torch.stack([views(make_world(WORLD, w), p, WORLD.view) for w, p in zip(worlds, pos)])
    return truth, pos


def test_every_method_gets_the_same_budget():
    base = dataclasses.replace(toy_budget(), model_kwargs=ModelKwargs(memory_size=4, recent_exclude=3, sink_size=2))
    method_keys = {key for keys in METHOD_KEYS.values() for key in keys}
    for method in METHODS:
        cfg = method_config(method, base)
        shared = {f.name: getattr(cfg.model_kwargs, f.name) for f in dataclasses.fields(cfg.model_kwargs)
                  if f.name not in method_keys}
        assert shared == {k: getattr(base.model_kwargs, k) for k in shared}  # window, sink, timestep shift
        assert dataclasses.replace(cfg, method=base.method, model_kwargs=base.model_kwargs) == base
        assert cfg.method == method.partition("/")[0]
    assert method_config("latentmem/random", base).model_kwargs.memory_size == 4
    assert method_config("infrope", base).model_kwargs.memory_size == ModelKwargs().memory_size  # K is no infrope option
    assert method_config("latentmem/oracle", base).model_kwargs.compression_method == "oracle"
    with pytest.raises(ConfigError, match="method 'infinite'"):
        method_config("infinite", base)


def test_oracle_retrieves_frames_of_the_revisited_place_and_keeps_the_opening():
    model = build_generator(ToyTrainConfig(model_preset="demo")).eval()
    truth, pos = loop_batch(2 * WORLD.loop_period + 6)
    cfg = toy_budget()
    runs = {m: rollout_from_opening(model, m, cfg, truth, pos, WORLD, 6, seed=0) for m in ("latentmem/oracle", "latentmem/random")}
    revisit = first_visits(pos, WORLD, cfg.model_kwargs.local_attn_size, 0.5) >= 0
    rates = {}
    for method, result in runs.items():
        assert torch.equal(result.latents[:, :6], truth[:, :6])
        hits, total = retrieval_hits(result.context_log, pos, revisit, WORLD, cfg.num_frame_per_block, 0.25)
        assert total > 0
        rates[method] = hits / total
    # not 1: early in a revisit fewer than K banked frames overlap the block, and the oracle still fills K slots
    assert rates["latentmem/oracle"] > 0.8, rates
    assert rates["latentmem/oracle"] > rates["latentmem/random"] + 0.3, rates


@pytest.mark.parametrize("method", ["infrope", "deepforcing"])
def test_window_methods_keep_the_opening_and_retrieve_nothing(method):
    model = build_generator(ToyTrainConfig(model_preset="demo")).eval()
    truth, pos = loop_batch(24)
    result = rollout_from_opening(model, method, toy_budget(), truth, pos, WORLD, 6, seed=0)
    assert torch.equal(result.latents[:, :6], truth[:, :6])
    assert torch.isfinite(result.latents).all() and (result.latents[:, 6:] - truth[:, 6:]).abs().max() > 0
    assert len(result.context_log) == 8 and not any(block.get("retrieval") for block in result.context_log)
    assert retrieval_hits(result.context_log, pos, torch.ones(pos.shape[:2], dtype=torch.bool), WORLD, 3, 0.25) == (0, 0)
