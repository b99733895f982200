"""∞-RoPE policy: flush and cut bookkeeping (official quirks and their fixes), and its equivalences."""
import pytest
import torch

from conftest import fixture_generator, no_clean_pass, seeded_noise
from pipeline.build import build_context_method
from pipeline.context.infrope import InfRopePolicy
from pipeline.context.policy import CacheGeometry, PolicySetup
from pipeline.prompt_schedule import parse_infrope_prompt
from pipeline.retrieval import RandomRetrieval
from pipeline.rollout import generate
from pipeline.rollout_config import ModelKwargs, RolloutConfig
from wan.block_attention import BlockKV
from wan.rope import Rope3D


def setup(num_frames: int) -> PolicySetup:
    """One layer, one token per frame: a key's value is its frame index, so cache contents are readable."""
    geometry = CacheGeometry(1, 1, 1, (1, 1), 1, 6, num_frames, 3, torch.device("cpu"), torch.float32)
    return PolicySetup(geometry, Rope3D(6, 64), 0, no_clean_pass)


def run_layout(policy: InfRopePolicy, line: str, num_frames: int) -> list[dict]:
    """Drive the policy with fake blocks whose keys/values equal their frame index; -> per block layout + cache."""
    out = []
    for block in parse_infrope_prompt(line, 3).blocks(num_frames, 3):
        if block.boundary:  # as CausalRollout.begin_block does at a change of scene
            policy.switch(block, None)
        context = policy.begin_block(block)
        kv = torch.tensor(block.frames, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, 1, 6)
        policy.end_block(block, context, None, BlockKV([kv], [kv], [kv]))
        k, _ = policy.cache.read(0, list(range(policy.cache.length)))
        out.append({**context.layout(0), "cache_values": k[0, :, 0, 0].tolist()})
    return out


def keys(layout: dict) -> list[list]:
    return [[f, p] for f, p, _, _ in layout["keys"]]


def test_official_flush_before_the_window_is_full_copies_never_written_slots():
    policy = InfRopePolicy(setup(18), window=12, sink_size=1)
    block2 = run_layout(policy, "a[1.5s] | b", 18)[2]  # 2 blocks of a: the flush finds frames 0..5 of 12 slots
    assert keys(block2) == [[0, 0], [None, 1], [None, 2], [6, 3], [7, 4], [8, 5]]
    assert block2["cache_values"][:3] == [0.0, 0.0, 0.0]  # zeros, as the official buffer
    assert block2["queries"] == [[6, 6], [7, 7], [8, 8]]


def test_flush_newest_keeps_the_two_newest_frames():
    policy = InfRopePolicy(setup(18), window=12, sink_size=1, flush_newest=True)
    block2 = run_layout(policy, "a[1.5s] | b", 18)[2]
    assert keys(block2) == [[0, 0], [4, 1], [5, 2], [6, 3], [7, 4], [8, 5]]
    assert block2["cache_values"][:3] == [0.0, 4.0, 5.0]


@pytest.mark.parametrize("after_sink, expected", [
    (False, [[0, 0], [10, 1], [11, 2], [12, 3], [13, 4], [14, 5]]),  # official: sink frame 1 overwritten
    (True, [[0, 0], [1, 1], [10, 2], [11, 3], [12, 4], [13, 5], [14, 6]]),
])
def test_flush_at_sink_two(after_sink, expected):
    policy = InfRopePolicy(setup(18), window=12, sink_size=2, flush_after_sink=after_sink)
    block4 = run_layout(policy, "a[3s] | b", 18)[4]
    assert keys(block4) == expected
    block5 = run_layout(InfRopePolicy(setup(18), window=12, sink_size=2,
                                      flush_after_sink=after_sink), "a[3s] | b", 18)[5]
    assert keys(block5)[:2] == expected[:2]  # the sink slots never move afterwards


def test_cut_moves_the_block_to_the_cut_positions_for_one_block_only():
    policy = InfRopePolicy(setup(36), window=6, sink_size=1)
    layouts = run_layout(policy, "scene A[3s] | scene B[3s#] | scene C[3s]", 36)
    assert layouts[8]["queries"] == [[24, 45], [25, 46], [26, 47]]
    assert keys(layouts[8]) == [[0, 0], [22, 1], [23, 2], [24, 45], [25, 46], [26, 47]]
    assert keys(layouts[9]) == [[0, 0], [25, 1], [26, 2], [27, 3], [28, 4], [29, 5]]


def rollout(cfg: RolloutConfig, line: str = "one prompt"):
    model = fixture_generator()
    noise = torch.randn(1, 36, 16, 8, 8, generator=torch.Generator().manual_seed(4))
    prompt = torch.randn(1, 10, 32, generator=torch.Generator().manual_seed(5))
    method = build_context_method(cfg, RandomRetrieval)
    schedule = method.parse_prompt(line)
    return generate(model, cfg, noise, [prompt] * len(schedule.segments), seeded_noise(6), method.policy, schedule)


def test_single_prompt_infrope_equals_latentmem_without_retrieval_and_attends_what_native_attends():
    infrope = rollout(RolloutConfig(method="infrope"))
    # K = 0 leaves latentmem an 11-frame local window; nothing is ever retrieved
    latentmem = rollout(RolloutConfig(method="latentmem", model_kwargs=ModelKwargs(memory_size=0, recent_exclude=0)))
    native = rollout(RolloutConfig(method="native"))
    assert (infrope.latents - latentmem.latents).abs().max() < 1e-6
    for ours, mem, nat in zip(infrope.context_log, latentmem.context_log, native.context_log):
        assert ours["keys"] == mem["keys"] and ours["queries"] == mem["queries"]
        assert [k[0] for k in ours["keys"]] == [k[0] for k in nat["keys"]]
    # from block 4 on the window is full: window-relative positions differ from native's absolute ones
    assert infrope.context_log[4]["queries"] == [[12, 9], [13, 10], [14, 11]]
    assert native.context_log[4]["queries"] == [[12, 12], [13, 13], [14, 14]]
    assert (infrope.latents - native.latents).abs().max() > 1e-3
