"""memory_switch_policy: which bank entries a block may retrieve after a prompt switch, and re-encoding on retrieval.

The hand-built schedule (2 frames per block, recency guard R = 2, a frame is banked two blocks after
it was generated, after that block's retrieval):

    block   0 1 2 3 | 4 5 6 7 8 9 | 10 11 | 12 13      (| = switch, |# at block 12 = hard cut)
    segment 0       | 1           | 2     | 3#

At block i the bank holds the frames of blocks 0 .. i-3 (of the segments the policy still keeps) and
the guard leaves those of blocks 0 .. i-4 eligible.
"""
import dataclasses

import pytest
import torch

from conftest import FIXTURES, load_fixture
from pipeline.bank_eviction import EVICTION_POLICIES
from pipeline.bank_storage import DiskTier, MemoryTier
from pipeline.build import build_context_method
from pipeline.descriptors import AvgPoolDescriptor
from pipeline.history_bank import HistoryBank
from pipeline.memory_switch import MEMORY_SWITCH_POLICIES
from pipeline.prompt_schedule import PromptSchedule, Segment
from pipeline.replay import build_method, build_model, recorded_noise, rollout_config, trace_prompts
from pipeline.retrieval import TopKRetrieval
from pipeline.retrieval_memory import RetrievalMemory
from pipeline.rollout import generate
from pipeline.rollout_config import ModelKwargs, RolloutConfig
from utils.config import ConfigError
from wan.block_attention import BlockAttention, BlockContext, CachedFrames, RecachePass, RetrievedFrames

NF = 2
SCHEDULE = PromptSchedule((Segment("a", 0), Segment("b", 4), Segment("c", 10), Segment("d", 12, cut=True)))
NUM_BLOCKS = 14


def frames_of_blocks(first: int, last: int) -> list[int]:
    return list(range(NF * first, NF * (last + 1)))


def segment_of(frame: int) -> int:
    return next(b.scene for b in SCHEDULE.blocks(NUM_BLOCKS * NF, NF) if frame in b.frames)


def drive(policy: str, prefetch: bool = False):
    """Run the memory through SCHEDULE as LatentMemPolicy calls it (enter, retrieve, bank, index, prefetch).
    -> (retrieved frames per block, K values of the retrieved entries per block, re-encode calls, latents)."""
    switch = MEMORY_SWITCH_POLICIES[policy]()
    bank = HistoryBank(1, 1, 1, 1, 2, MemoryTier("cpu"), torch.float32, "cpu",
                       latent_shape=(2, 1, 1) if switch.keeps_latents else None)
    calls = []

    def reencode(frame, latent, scene):
        calls.append((frame, latent.clone(), scene))
        k = torch.full((1, 1, 1, 1, 2), 1000.0 * scene + frame)
        return k, -k

    memory = RetrievalMemory(bank, TopKRetrieval(AvgPoolDescriptor(), "avg_pool"), top_k=100, recent_exclude=2,
                             switch=switch, reencode=reencode)
    latents = torch.randn(1, NUM_BLOCKS * NF, 2, 1, 1, generator=torch.Generator().manual_seed(0))
    retrieved, values = {}, {}
    for block in SCHEDULE.blocks(NUM_BLOCKS * NF, NF):
        first = block.frames[0]
        memory.enter(block)
        got = memory.retrieve(first, torch.float32)
        frames = got[1][0].tolist() if got else []  # retrieve returns the frames as a device tensor [B, k]
        retrieved[block.index] = sorted(frames)
        values[block.index] = {} if got is None else dict(zip(frames, got[0].k[0, 0, :, 0, 0, 0].tolist()))
        if block.index >= 2:
            leaving = list(range(first - 2 * NF, first - NF))
            k = torch.tensor(leaving, dtype=torch.float32).view(1, 1, -1, 1, 1, 1).expand(1, 1, NF, 1, 1, 2).clone()
            memory.bank_frames(leaving, k, -k)
        memory.index(latents[:, first : first + NF])
        if prefetch and block.index + 1 < NUM_BLOCKS:
            memory.prefetch(first + NF, torch.float32)
    return retrieved, values, calls, latents, memory


def test_global_ignores_segments_until_a_hard_cut():
    retrieved = drive("global")[0]
    for i in range(4, 12):  # across both plain switches: every entry outside the guard
        assert retrieved[i] == frames_of_blocks(0, i - 4), i
    assert retrieved[12] == retrieved[13] == []  # the cut: frames 0..19 would be eligible without it


def test_scoped_retrieves_only_the_current_segment_after_the_recency_guard():
    retrieved = drive("scoped")[0]
    assert retrieved[3] == [] and retrieved[4] == []  # frames 0, 1 of segment 0 are out of scope at block 4
    assert [retrieved[i] for i in (5, 6, 7)] == [[], [], []]
    # segment 1's first frames (block 4) are banked at block 6 and pass the guard at block 8
    assert retrieved[8] == frames_of_blocks(4, 4) and retrieved[9] == frames_of_blocks(4, 5)
    assert retrieved[10] == retrieved[11] == retrieved[12] == retrieved[13] == []


def test_scoped_bank_holds_no_entry_it_can_never_retrieve():
    *_, memory = drive("scoped")
    # the last segment starts at block 12 (frame 24): frames 0..19 were dropped or never banked
    assert memory.bank.size == 0
    log = {e["block_start_frame"]: e for e in memory.log}
    assert log[16]["selected_segments"] == [[1, 1]] and log[16]["segment"] == 1
    assert log[16]["evicted_frames"] == frames_of_blocks(0, 1)  # dropped at the switch of block 4 (frames 2..7 never banked)


def test_recache_on_retrieve_reencodes_each_old_entry_once_per_segment():
    retrieved, values, calls, latents, memory = drive("recache_on_retrieve")
    assert retrieved == drive("global")[0]  # same eligibility as global
    expected = []
    for i in range(4, 10):  # segment 1: the segment-0 frames, each when first retrieved
        expected += [(f, 1) for f in frames_of_blocks(i - 4, i - 4) if f < 8]
    expected += [(f, 2) for f in frames_of_blocks(0, 7)]  # segment 2: all 14 eligible at block 10, frames 14, 15 at 11
    assert [(f, s) for f, _, s in calls] == expected
    for frame, latent, _ in calls:  # the latent handed to the re-encoder is the frame's clean latent
        assert torch.equal(latent, latents[:, frame])
    for i, got in values.items():  # retrieved K: re-encoded under the block's segment for old entries, as banked otherwise
        scene = segment_of(NF * i)
        for frame, k in got.items():
            assert k == (1000.0 * scene + frame if segment_of(frame) < scene else frame), (i, frame)
    log = {e["block_start_frame"] // NF: e for e in memory.log}
    assert log[10]["reencoded_frames"] == frames_of_blocks(0, 6) and log[11]["reencoded_frames"] == frames_of_blocks(7, 7)
    assert log[10]["selected_segments"][0] == [0 if f < 8 else 1 for f in log[10]["selected_frames"][0]]


def test_prefetched_decisions_equal_plain_ones_across_switches():
    for policy in MEMORY_SWITCH_POLICIES:
        plain, prefetched = drive(policy), drive(policy, prefetch=True)
        assert plain[0] == prefetched[0] and plain[1] == prefetched[1], policy
        assert [(f, s) for f, _, s in plain[2]] == [(f, s) for f, _, s in prefetched[2]]
        assert plain[4].log == prefetched[4].log


@pytest.mark.parametrize("eviction", sorted(EVICTION_POLICIES))
@pytest.mark.parametrize("storage", ["float32", "float8", "disk"])
def test_segments_and_latents_follow_their_entries_through_eviction(eviction, storage, tmp_path):
    dtype = {"float32": torch.float32, "float8": torch.float8_e4m3fn, "disk": torch.bfloat16}[storage]
    tier = DiskTier(tmp_path, 1 << 20) if storage == "disk" else MemoryTier("cpu")
    bank = HistoryBank(2, 1, 3, 1, 4, tier, dtype, "cpu", max_frames=8, eviction=EVICTION_POLICIES[eviction](),
                       recent_guard=2, latent_shape=(2, 1, 1))
    bank.storage.chunk_slots = 3
    desc = torch.randn(1, 40, 5, generator=torch.Generator().manual_seed(1))
    for f in range(1, 31):
        k = torch.full((2, 1, 1, 3, 1, 4), float(f))
        bank.add([f], k, -k, desc[:, f : f + 1], [f // 10], torch.full((1, 1, 2, 1, 1), float(f)))
        assert bank.segments == [frame // 10 for frame in bank.frames]
        assert bank.size == min(f, 8) and bank.frames[-2:] == [f - 1, f][-min(f, 2):]  # the guard stays
    got = bank.gather(torch.arange(bank.size)[None], torch.float32).k[0, 0, :, 0, 0, 0]
    assert torch.allclose(got, torch.tensor(bank.frames, dtype=torch.float32), rtol=0.07)  # e4m3: 3 mantissa bits
    for p, frame in enumerate(bank.frames):
        assert torch.equal(bank.latent(p), torch.full((1, 2, 1, 1), float(frame)))
    old = [f for f in bank.frames if f < 30]
    assert bank.drop_segments_before(3) == old and bank.frames == [30] and bank.segments == [3]
    assert torch.equal(bank.latent(0), torch.full((1, 2, 1, 1), 30.0))
    bank.close()


def test_replaced_entry_is_read_back_and_a_segment_never_goes_back():
    bank = HistoryBank(1, 1, 1, 1, 2, MemoryTier("cpu"), torch.float32, "cpu")
    bank.add([1, 2], torch.ones(1, 1, 2, 1, 1, 2), torch.ones(1, 1, 2, 1, 1, 2), None, [0, 1])
    bank.replace(0, torch.full((1, 1, 1, 1, 2), 7.0), torch.full((1, 1, 1, 1, 2), 8.0))
    got = bank.gather(torch.tensor([[0, 1]]), torch.float32)
    assert got.k[0, 0, :, 0, 0, 0].tolist() == [7.0, 1.0] and got.v[0, 0, :, 0, 0, 0].tolist() == [8.0, 1.0]
    with pytest.raises(ValueError, match="segment 0 banked after an entry of segment 1"):
        bank.add([3], torch.ones(1, 1, 1, 1, 1, 2), torch.ones(1, 1, 1, 1, 1, 2), None, [0])
    with pytest.raises(ValueError, match="keeps no latents"):
        bank.latent(0)


def test_policy_is_a_latentmem_option_with_known_values():
    RolloutConfig(method="latentmem", model_kwargs=ModelKwargs(memory_switch_policy="global")).validate()
    with pytest.raises(ConfigError, match="memory_switch_policy is a latentmem option but method is 'native'"):
        RolloutConfig(method="native", model_kwargs=ModelKwargs(memory_switch_policy="global")).validate()
    with pytest.raises(ConfigError, match="memory_switch_policy 'newest' is not one of"):
        RolloutConfig(method="latentmem", model_kwargs=ModelKwargs(memory_switch_policy="newest")).validate()


@pytest.mark.parametrize("policy", ["global", "recache_on_retrieve"])
def test_one_prompt_rollouts_are_bit_identical_under_every_policy(policy):
    """With one segment no policy changes anything: the reference trace's latents and retrievals, bit for bit
    equal to the default `scoped` run, and no clean pass."""
    trace = load_fixture("gen_latentmem_avgpool.pt")
    model = build_model(trace["config"], FIXTURES)
    runs = {}
    for name in ("scoped", policy):
        cfg = rollout_config(trace, FIXTURES)
        cfg.model_kwargs.memory_switch_policy = name
        method = build_method(cfg, model, tuple(trace["noise"].shape[2:]))
        embeds, schedule = trace_prompts(trace, method)
        runs[name] = generate(model, cfg, trace["noise"], embeds, recorded_noise(trace), method.policy, schedule)
    assert torch.equal(runs["scoped"].latents, runs[policy].latents)
    assert (runs[policy].latents - trace["output"]).abs().max() < 1e-5
    assert runs["scoped"].context_log == runs[policy].context_log
    assert all(e["reencoded_frames"] == [] for e in runs[policy].extras["retrieval_log"])
    assert runs[policy].extras["memory_switch_policy"] == policy


def switch_rollout(policy: str):
    """The fixtures' model on a 14-block video whose prompt switches at block 6 (frame 18); every clean pass
    recorded with the step it ran in (the retrieval's re-encodes run in begin_block), and each retrieving block's retrieved K/V with a direct clean pass of every re-encoded entry
    (its clean latent at t = 0 under the block's prompt, [sink ‖ entry] context, the entry at position 1)."""
    trace = load_fixture("gen_latentmem_avgpool.pt")
    model = build_model(trace["config"], FIXTURES)
    cfg = RolloutConfig(method="latentmem", model_kwargs=ModelKwargs(compression_method="avg_pool",
                                                                     memory_switch_policy=policy))
    cfg.validate()
    gen = torch.Generator().manual_seed(7)
    noise = torch.randn(1, 42, 16, 8, 8, generator=gen)
    embeds = [torch.randn(1, 10, 32, generator=gen) for _ in range(2)]
    with torch.no_grad():
        texts = [model.encode_text(e) for e in embeds]
    schedule = PromptSchedule((Segment("a", 0), Segment("b", 6)))
    factory = build_context_method(cfg, lambda: TopKRetrieval(AvgPoolDescriptor(), "avg_pool")).policy
    calls, checks, stage = [], [], ["other"]

    def counted(setup):
        def clean_pass(context, x0, scene):
            calls.append((stage[-1], context.frames, scene))
            return setup.clean_pass(context, x0, scene)

        policy_obj = factory(dataclasses.replace(setup, clean_pass=clean_pass))
        begin = policy_obj.begin_block

        def begin_block(block):
            stage.append("begin_block")
            context = begin(block)
            stage.append("other")  # e.g. the window recache of the next switch
            retrieved = [s for s in context.sources if isinstance(s, RetrievedFrames)]
            if retrieved:
                reencoded = policy_obj.memory.log[-1]["reencoded_frames"]
                direct = {f: direct_pass(policy_obj, f, texts[block.scene]) for f in reencoded}
                checks.append((block, retrieved[0].frames[0].tolist(), retrieved[0].kv.k.clone(), retrieved[0].kv.v.clone(), direct))
            return context

        policy_obj.begin_block = begin_block
        return policy_obj

    def direct_pass(policy_obj, frame, text):
        sink = CachedFrames.of_frames(policy_obj.cache, [0], [0], policy_obj.rope, policy_obj.grid_hw)
        recache = RecachePass(BlockAttention(BlockContext((frame,), [sink], [1], [1]), policy_obj.rope, policy_obj.grid_hw))
        latent = policy_obj.memory.bank.latent(policy_obj.memory.bank.frames.index(frame))
        with torch.no_grad():
            model(latent[:, None], torch.zeros(1, 1), text, recache)
        return torch.stack(recache.block_kv.k), torch.stack(recache.block_kv.v), latent

    result = generate(model, cfg, noise, embeds, lambda shape: torch.randn(shape, generator=gen), counted, schedule)
    return result, calls, checks


def test_recache_on_retrieve_rollout_reencodes_once_and_matches_a_direct_clean_pass():
    result, calls, checks = switch_rollout("recache_on_retrieve")
    log = result.extras["retrieval_log"]
    old = [f for e in log if e["segment"] == 1 for f, s in zip(e["selected_frames"][0], e["selected_segments"][0]) if s == 0]
    reencoded = [f for e in log for f in e["reencoded_frames"]]
    assert len(old) > len(set(old)) >= 3  # old entries are retrieved, several of them in more than one block
    assert sorted(reencoded) == sorted(set(old))  # each exactly once in the segment
    calls = [(frames, scene) for step, frames, scene in calls if step == "begin_block"]
    assert sorted(frames[0] for frames, _ in calls) == sorted(reencoded) and {s for _, s in calls} == {1}
    assert all(e["reencoded_frames"] == [] for e in log if e["segment"] == 0)
    compared = 0
    for block, frames, k, v, direct in checks:
        for f, (dk, dv, latent) in direct.items():
            j = frames.index(f)
            assert torch.equal(latent, result.latents[:, f])  # the bank kept the frame's clean latent
            assert (k[:, :, j] - dk).abs().max() < 1e-6 and (v[:, :, j] - dv).abs().max() < 1e-6  # float32 bank
            compared += 1
    assert compared == len(reencoded)


def test_scoped_and_global_rollouts_across_a_switch():
    scoped, scoped_calls, _ = switch_rollout("scoped")
    plain, plain_calls, _ = switch_rollout("global")
    assert [c for c in scoped_calls + plain_calls if c[0] == "begin_block"] == []
    for entry in scoped.extras["retrieval_log"]:
        assert set(entry["selected_segments"][0]) == {entry["segment"]}
        if entry["segment"] == 1:
            assert min(entry["selected_frames"][0]) >= 18
    switched = [e for e in plain.extras["retrieval_log"] if e["segment"] == 1]
    assert any(0 in e["selected_segments"][0] for e in switched)  # global brings back the old prompt's frames
    first = next(e for e in scoped.extras["retrieval_log"] if e["segment"] == 1)
    # segment 1 starts at frame 18; it enters the bank after 11 more frames and passes the guard 5 frames later
    assert first["block_start_frame"] == 36
    assert scoped.context_log[:6] == plain.context_log[:6]
    assert torch.equal(scoped.latents[:, :18], plain.latents[:, :18])
