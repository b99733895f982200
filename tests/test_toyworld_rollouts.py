import dataclasses

import pytest
import torch

from pipeline.rollout_config import RolloutConfig
from toydatasets.toy_world import Trajectory, WorldConfig, make_world, views
from toyworld.metrics import first_visits, retrieval_hits
from toyworld.rollouts import METHODS, method_config, rollout_from_opening
from toyworld.train import ToyTrainConfig, build_generator
from utils.config import ConfigError

WORLD = WorldConfig()


def loop_batch(frames: int, worlds=(0, 1)):
    pos = torch.stack([Trajectory("loop", (2 * i, 4), (0, 1 - 2 * i)).positions(WORLD, frames) for i in range(len(worlds))])
    truth = torch.stack([views(make_world(WORLD, w), p, WORLD.view) for w, p in zip(worlds, pos)])
    return truth, pos


def test_every_method_gets_the_same_budget():
    base = RolloutConfig()
    for method in METHODS:
        cfg = method_config(method, base)
        same = {f.name: getattr(cfg.model_kwargs, f.name) for f in dataclasses.fields(cfg.model_kwargs)
                if f.name not in ("use_latentmem", "compression_method")}
        assert same == {k: getattr(base.model_kwargs, k) for k in same}
        assert dataclasses.replace(cfg, model_kwargs=base.model_kwargs) == base
    assert not method_config("native", base).model_kwargs.use_latentmem
    assert method_config("latentmem/oracle", base).model_kwargs.compression_method == "oracle"
    with pytest.raises(ConfigError, match="method 'infinite'"):
        method_config("infinite", base)


def test_oracle_retrieves_frames_of_the_revisited_place_and_keeps_the_opening():
    model = build_generator(ToyTrainConfig(model_preset="demo")).eval()
    truth, pos = loop_batch(2 * WORLD.loop_period + 6)
    cfg = RolloutConfig()
    runs = {m: rollout_from_opening(model, m, cfg, truth, pos, WORLD, 6, seed=0) for m in ("latentmem/oracle", "latentmem/random")}
    revisit = first_visits(pos, WORLD, cfg.model_kwargs.local_attn_size, 0.5) >= 0
    rates = {}
    for method, result in runs.items():
        assert torch.equal(result.latents[:, :6], truth[:, :6])
        hits, total = retrieval_hits(result.retrieval_log, pos, revisit, WORLD, cfg.num_frame_per_block, 0.25)
        assert total > 0
        rates[method] = hits / total
    # not 1: early in a revisit fewer than K banked frames overlap the block, and the oracle still fills K slots
    assert rates["latentmem/oracle"] > 0.8, rates
    assert rates["latentmem/oracle"] > rates["latentmem/random"] + 0.3, rates
