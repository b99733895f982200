"""LongLive's window recache at a prompt switch: the sink rule, its corrected options, the causal option.
(The official behaviour itself is proven by replaying tests/fixtures/longlive_switch in test_replay.py.)"""
import pytest
import torch

from conftest import fixture_generator, seeded_noise
from pipeline.build import build_context_method
from pipeline.context.window_recache import CleanLatents
from pipeline.descriptors import AvgPoolDescriptor
from pipeline.prompt_schedule import Block
from pipeline.replay import RecordingRollout
from pipeline.retrieval import RandomRetrieval, TopKRetrieval
from pipeline.rollout import CausalRollout
from pipeline.rollout_config import ModelKwargs, RolloutConfig

NF = 3


def block(index: int, scene: int, previous: int) -> Block:
    return Block(index, tuple(range(index * NF, (index + 1) * NF)), scene, scene != previous, False)


def run_blocks(rollout: CausalRollout, scenes: list[int], start: int = 0, seed: int = 0) -> None:
    previous = rollout.scene
    for index, scene in enumerate(scenes, start):
        b = block(index, scene, previous)
        attn = rollout.begin_block(b)
        noise = torch.randn(1, NF, 16, 8, 8, generator=torch.Generator().manual_seed(seed + index))
        x0 = rollout.denoise_block(attn, noise, seeded_noise(index))
        _, kv = rollout.recache(attn, x0, seeded_noise(0))
        rollout.end_block(b, attn, x0, kv)
        previous = scene


def native_rollout(num_blocks: int, **switch_options) -> CausalRollout:
    cfg = RolloutConfig(method="native", model_kwargs=ModelKwargs(local_attn_size=12, sink_size=3, **switch_options))
    g = torch.Generator().manual_seed(7)
    embeds = [torch.randn(1, 10, 32, generator=g) for _ in range(2)]
    return CausalRollout(fixture_generator(), cfg, build_context_method(cfg, RandomRetrieval).policy, embeds, (16, 8, 8),
                         num_blocks * NF)


def sink_kv(rollout: CausalRollout, layer: int = 1) -> torch.Tensor:
    return rollout.policy.cache.read(layer, [0, 1, 2])[1].clone()


@pytest.mark.parametrize("always, sink, recached", [
    (False, "rewritten", [0, 1, 2, 3, 4, 5]),  # official: before the window is full, global_sink does not protect
    (True, "kept", [3, 4, 5]),
])
def test_early_switch_rewrites_the_sink_unless_global_sink_always(always, sink, recached):
    rollout = native_rollout(4, global_sink_always=always)
    run_blocks(rollout, [0, 0])
    before = sink_kv(rollout)
    run_blocks(rollout, [1], start=2)
    event = rollout.context_log[-1]["switch"]
    assert (event["sink"], event["recached_frames"], event["sink_frames"]) == (sink, recached, [0, 1, 2])
    assert torch.equal(sink_kv(rollout), before) == always


def test_late_switch_without_global_sink_moves_the_sink_to_the_first_recached_frames():
    rollout = native_rollout(7, global_sink=False)
    run_blocks(rollout, [0, 0, 0, 0, 0, 1, 1])
    event = rollout.context_log[5]["switch"]
    assert (event["sink"], event["recached_frames"], event["sink_frames"]) == ("rewritten", list(range(3, 15)), [3, 4, 5])
    # the moved sink keeps its frames' own positions and never moves again (block 6 attends 3, 4, 5 first)
    assert rollout.context_log[6]["keys"][:3] == [[3, 3, 16], [4, 4, 16], [5, 5, 16]]


def test_without_kv_recache_a_switch_only_changes_the_prompt():
    rollout = native_rollout(6, kv_recache=False)
    run_blocks(rollout, [0, 0, 0, 0, 0])
    k_before = rollout.policy.cache.read(1, list(range(12)))[0].clone()
    run_blocks(rollout, [1], start=5)
    assert rollout.context_log[5]["switch"]["recached_frames"] == []
    # the block's own frames replaced 6, 7, 8; every other slot still holds the old prompt's keys
    assert torch.equal(rollout.policy.cache.read(1, list(range(9)))[0], torch.cat([k_before[:, :48], k_before[:, 96:]], 1))


@pytest.mark.parametrize("causal", [False, True])
def test_causal_recache_keeps_earlier_frames_independent_of_later_ones(causal):
    """Perturb the clean latents of the newest block before the switch: with the official unmasked recache every
    recached frame changes; block-causal, the frames before that block keep their keys."""
    keys = []
    for perturb in (0.0, 1.0):
        rollout = native_rollout(6, switch_recache_causal=causal)
        run_blocks(rollout, [0, 0, 0, 0, 0])
        rollout.latents.add((14,), rollout.latents([14]) + perturb)
        run_blocks(rollout, [1], start=5)
        slots = rollout.policy.cache.slots_of(list(range(9, 15)))
        keys.append(rollout.policy.cache.read(1, slots)[0])
    earlier = slice(0, 3 * 16)  # frames 9, 10, 11: the block before the perturbed one
    assert torch.equal(keys[0][:, earlier], keys[1][:, earlier]) == causal
    assert not torch.equal(keys[0][:, 3 * 16:], keys[1][:, 3 * 16:])


def test_clean_latents_keep_the_first_frames_and_the_most_recent_ones():
    latents = CleanLatents(capacity=4, first=1)
    for b in range(4):
        latents.add((2 * b, 2 * b + 1), torch.arange(2 * b, 2 * b + 2, dtype=torch.float32).view(1, 2, 1, 1, 1))
    assert latents([0, 4, 5, 6, 7]).flatten().tolist() == [0, 4, 5, 6, 7]
    with pytest.raises(KeyError, match=r"frames \[3\] are not among"):
        latents([3])


@pytest.mark.parametrize("method", ["latentmem", "deepforcing"])
def test_window_recache_re_encodes_cached_frames_at_the_positions_the_last_block_gave_them(method):
    """latentmem (window-relative positions) and deepforcing (after its compressed tokens) recache every whole
    frame they cache; the recache call places each at the position the previous block attended it at."""
    cfg = RolloutConfig(method=method, model_kwargs=ModelKwargs(sink_size=1, **(
        {"compression_method": "avg_pool"} if method == "latentmem" else {})))
    g = torch.Generator().manual_seed(7)
    embeds = [torch.randn(1, 10, 32, generator=g) for _ in range(2)]
    policy = build_context_method(cfg, lambda: TopKRetrieval(AvgPoolDescriptor(), "avg_pool")).policy
    rollout = RecordingRollout(fixture_generator(), cfg, policy, embeds, (16, 8, 8), 18)
    run_blocks(rollout, [0, 0, 0, 0, 0, 1])
    previous = rollout.context_log[4]
    last_position = {f: p for f, p, tokens in previous["keys"] if tokens == 16} | {f: p for f, p in previous["queries"]}
    (context, _, _), = rollout.clean_calls
    event = rollout.context_log[5]["switch"]
    assert event["sink"] == "kept" and event["sink_frames"] == [0]  # frame 15 > window 12: global_sink protects
    assert list(context.frames) == [0] + event["recached_frames"]
    attended = [(f, p) for f, p in zip(context.frames, context.query_positions) if f in last_position]
    assert len(attended) >= 6 and all(last_position[f] == p for f, p in attended)
    # latentmem also caches frames its local window no longer attends; they sit where the window puts them
    assert context.query_positions == sorted(context.query_positions)
