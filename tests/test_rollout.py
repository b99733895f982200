"""The block loop against the reference rollouts, and retrieval behaviour on batches."""
import pytest
import torch

from conftest import FIXTURES, load_fixture, seeded_noise
from pipeline.build import build_context_method
from pipeline.descriptors import AvgPoolDescriptor, GroundTruthDescriptor
from pipeline.replay import build_method, build_model, recorded_noise, rollout_config, trace_prompts
from pipeline.retrieval import RandomRetrieval, TopKRetrieval
from pipeline.prompt_schedule import Block, PromptSchedule
from pipeline.rollout import CausalRollout, generate
from pipeline.rollout_config import ModelKwargs, RolloutConfig
from wan.checkpoint import load_backbone_checkpoint
from wan.model import CausalWanModel
from wan.model_config import WanModelConfig, model_preset


def run_fixture(name):
    trace = load_fixture(name)
    rcfg, model = rollout_config(trace, FIXTURES), build_model(trace["config"], FIXTURES)
    method = build_method(rcfg, model, tuple(trace["noise"].shape[2:]))
    embeds, schedule = trace_prompts(trace, method)
    result = generate(model, rcfg, trace["noise"], embeds, recorded_noise(trace), method.policy, schedule)
    return trace, result


def avg_pool_policy(cfg):
    return build_context_method(cfg, lambda: TopKRetrieval(AvgPoolDescriptor(), "avg_pool")).policy


@pytest.mark.parametrize("name", ["gen_native_sink1.pt", "gen_native_sink3.pt", "gen_native_lora.pt"])
def test_native_rollout_reproduces_reference_latents(name):
    trace, result = run_fixture(name)
    assert result.latents.shape == trace["output"].shape
    assert (result.latents - trace["output"]).abs().max() < 1e-5
    assert result.extras == {} and len(result.context_log) == trace["config"]["num_blocks"]


@pytest.mark.parametrize("name", ["gen_latentmem_avgpool.pt", "gen_latentmem_ae.pt"])
def test_latentmem_rollout_reproduces_reference(name):
    trace, result = run_fixture(name)
    assert (result.latents - trace["output"]).abs().max() < 1e-5
    retrieval_log = result.extras["retrieval_log"]
    assert (result.extras["descriptors"] - trace["descriptors"]).abs().max() < 5e-5
    expected = trace["memory_indices_log"]
    assert [e["block_start_frame"] for e in retrieval_log] == [e["query_frame"] for e in expected]
    for ours, ref in zip(retrieval_log, expected):
        assert ours["selected_pool_indices"] == ref["selected_pool_indices"]
        assert ours["selected_frames"] == ref["selected_global_frames"]
        assert ours["num_banked"] == ref["num_evicted"]
        assert torch.allclose(torch.tensor(ours["similarities"]), torch.tensor(ref["selected_similarities"]), atol=1e-5)
    # KV is gathered exactly once per retrieving block, shared by its N denoising calls and the recache
    assert result.extras["kv_gathers"] == len(expected)


def test_disabling_retrieval_changes_latentmem_outputs():
    trace = load_fixture("gen_latentmem_avgpool.pt")
    cfg = rollout_config(trace, FIXTURES)
    cfg.model_kwargs.memory_size, cfg.model_kwargs.recent_exclude = 6, 10**6  # nothing is ever eligible
    model = build_model(trace["config"], FIXTURES)
    result = generate(model, cfg, trace["noise"], trace["prompt_embeds"], recorded_noise(trace), avg_pool_policy(cfg))
    assert result.extras["retrieval_log"] == []
    first_retrieving_block = trace["memory_indices_log"][0]["query_frame"]
    before = (result.latents[:, :first_retrieving_block] - trace["output"][:, :first_retrieving_block]).abs().max()
    assert before < 1e-5
    assert (result.latents - trace["output"]).abs().max() > 0.05


def per_sample_noise(seeds, shape_tail):
    gens = [torch.Generator().manual_seed(s) for s in seeds]

    def draw(shape):
        return torch.stack([torch.randn(shape[1:], generator=g) for g in gens])

    return draw


def test_batch_of_two_matches_single_runs_with_different_selections():
    model = CausalWanModel(WanModelConfig.from_dict(load_fixture("gen_latentmem_avgpool.pt")["config"]["model"])).eval()
    load_backbone_checkpoint(model, FIXTURES / "gen_generator.pt")
    cfg = RolloutConfig(method="latentmem", model_kwargs=ModelKwargs(compression_method="avg_pool"))
    noise = torch.randn(2, 36, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    prompts = torch.randn(2, 10, 32, generator=torch.Generator().manual_seed(2))
    policy = avg_pool_policy(cfg)
    batched = generate(model, cfg, noise, prompts, per_sample_noise([10, 11], None), policy)
    singles = [generate(model, cfg, noise[i : i + 1], prompts[i : i + 1], per_sample_noise([10 + i], None), policy) for i in range(2)]
    for i, single in enumerate(singles):
        assert (batched.latents[i] - single.latents[0]).abs().max() < 1e-4
        assert [e["selected_pool_indices"][i] for e in batched.extras["retrieval_log"]] == [
            e["selected_pool_indices"][0] for e in single.extras["retrieval_log"]]
    selections = [(e["selected_pool_indices"][0], e["selected_pool_indices"][1]) for e in batched.extras["retrieval_log"]]
    assert any(a != b for a, b in selections), "the two samples should retrieve different frames"
    for entry in batched.extras["retrieval_log"]:
        for row in entry["selected_pool_indices"]:
            assert len(row) <= cfg.model_kwargs.memory_size and max(row) < entry["num_banked"] - cfg.model_kwargs.recent_exclude


def test_random_retrieval_respects_guard_and_seed():
    model = CausalWanModel(WanModelConfig.from_dict(load_fixture("gen_latentmem_avgpool.pt")["config"]["model"])).eval()
    cfg = RolloutConfig(method="latentmem", model_kwargs=ModelKwargs(compression_method="random"))
    noise = torch.randn(1, 30, 16, 8, 8, generator=torch.Generator().manual_seed(3))
    prompts = torch.randn(1, 10, 32)
    policy = build_context_method(cfg, RandomRetrieval).policy
    runs = [generate(model, cfg, noise, prompts, per_sample_noise([5], None), policy, seed=9) for _ in range(2)]
    logs = [run.extras["retrieval_log"] for run in runs]
    assert logs[0] == logs[1] and len(logs[0]) > 0
    assert torch.equal(runs[0].latents, runs[1].latents)
    other = generate(model, cfg, noise, prompts, per_sample_noise([5], None), policy, seed=10).extras["retrieval_log"]
    assert [e["selected_pool_indices"] for e in other] != [e["selected_pool_indices"] for e in logs[0]]
    for entry in logs[0]:
        assert entry["similarities"] is None
        assert max(entry["selected_pool_indices"][0]) < entry["num_eligible"]


def fixture_model():
    model = CausalWanModel(WanModelConfig.from_dict(load_fixture("gen_latentmem_avgpool.pt")["config"]["model"])).eval()
    load_backbone_checkpoint(model, FIXTURES / "gen_generator.pt")
    return model


def test_opening_frames_are_kept_cached_and_indexed():
    model = fixture_model()
    cfg = RolloutConfig(method="latentmem", model_kwargs=ModelKwargs(compression_method="avg_pool"))
    noise = torch.randn(1, 30, 16, 8, 8, generator=torch.Generator().manual_seed(4))
    prompts = torch.randn(1, 10, 32, generator=torch.Generator().manual_seed(5))
    opening = torch.randn(1, 6, 16, 8, 8, generator=torch.Generator().manual_seed(6))
    free = generate(model, cfg, noise, prompts, per_sample_noise([7], None), avg_pool_policy(cfg))
    opened = generate(model, cfg, noise, prompts, per_sample_noise([7], None), avg_pool_policy(cfg), opening=opening)
    assert torch.equal(opened.latents[:, :6], opening)
    assert torch.allclose(opened.extras["descriptors"][:, :6], opening.mean(dim=(-2, -1)))
    # the generated frames see the opening: they differ from the free run's
    assert (opened.latents[:, 6:9] - free.latents[:, 6:9]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="multiple of num_frame_per_block"):
        generate(model, cfg, noise, prompts, per_sample_noise([7], None), avg_pool_policy(cfg), opening=opening[:, :4])


def test_oracle_descriptor_retrieves_the_frames_its_ground_truth_says():
    model = fixture_model()
    cfg = RolloutConfig(method="latentmem", model_kwargs=ModelKwargs(compression_method="oracle"))
    cfg.validate()
    frames, classes = 45, 4
    truth = torch.nn.functional.one_hot(torch.arange(frames) % classes, classes).float()[None]  # [1, F, 4]
    noise = torch.randn(1, frames, 16, 8, 8, generator=torch.Generator().manual_seed(8))
    result = generate(model, cfg, noise, torch.randn(1, 10, 32), per_sample_noise([9], None),
                      build_context_method(cfg, lambda: TopKRetrieval(GroundTruthDescriptor(truth), "oracle")).policy)
    decisions = [block["retrieval"] for block in result.context_log if block["retrieval"]]
    assert len(decisions) > 0 and decisions == result.extras["retrieval_log"]
    for entry in decisions:
        query_class = entry["query_frame"] % classes
        eligible = entry["num_eligible"]
        sink = cfg.model_kwargs.sink_size
        same = [f for f in range(sink, sink + eligible) if f % classes == query_class]
        hits = [f for f, s in zip(entry["selected_frames"][0], entry["similarities"][0]) if s > 0.999]
        assert all(f % classes == query_class for f in hits)
        assert len(hits) == min(cfg.model_kwargs.memory_size, len(same))
    with pytest.raises(ValueError, match="ground truth"):
        GroundTruthDescriptor(truth)(torch.zeros(1, frames + 1, 16, 8, 8))


def bank_rollout(model, frames=30, **bank_settings):
    cfg = RolloutConfig(method="latentmem", model_kwargs=ModelKwargs(compression_method="avg_pool", **bank_settings))
    cfg.validate()
    noise = torch.randn(1, frames, 16, 8, 8, generator=torch.Generator().manual_seed(4))
    prompts = torch.randn(1, 10, 32, generator=torch.Generator().manual_seed(5))
    return generate(model, cfg, noise, prompts, per_sample_noise([6], None), avg_pool_policy(cfg))


def retrievals(result):
    """Retrieval entries of the blocks that retrieved, from the context log."""
    return [e["retrieval"] for e in result.context_log if e["retrieval"] is not None]


def test_prefetched_loop_is_bit_identical_to_the_plain_loop(tmp_path):
    model = fixture_model()
    for settings in ({}, {"memory_budget_gb": 8.5 * 16384 / 1e9, "memory_eviction": "redundant"},
                     {"memory_device": "disk", "memory_folder": str(tmp_path), "memory_dtype": "float8_e4m3fn"}):
        plain = bank_rollout(model, memory_prefetch=False, **settings)
        prefetched = bank_rollout(model, memory_prefetch=True, **settings)
        assert torch.equal(plain.latents, prefetched.latents)
        assert plain.context_log == prefetched.context_log and len(retrievals(plain)) >= 4


def test_budgeted_rollout_keeps_the_bank_bounded_and_logs_evictions():
    model = fixture_model()
    # fixture frame: 2 (k, v) x 2 layers x 16 tokens x 4 heads x 16 dims x 4 bytes = 16384 bytes -> 8 frames
    budget = 8.5 * 16384 / 1e9
    result = bank_rollout(model, memory_budget_gb=budget, memory_eviction="oldest")
    unbounded = bank_rollout(model)
    evicted = [f for e in retrievals(result) for f in e["evicted_frames"]]
    assert max(e["num_banked"] for e in retrievals(result)) == 8
    assert evicted == list(range(1, len(evicted) + 1)) and len(evicted) >= 6  # oldest first
    gone = 0
    for entry in retrievals(result):
        # pool indices are positions in the bounded bank; selected_frames name the frames, all still banked
        gone = max([gone, *entry["evicted_frames"]])
        assert min(entry["selected_frames"][0]) > gone
        assert sorted(entry["selected_frames"][0]) == sorted(gone + 1 + i for i in entry["selected_pool_indices"][0])
    assert all(e["evicted_frames"] == [] for e in retrievals(unbounded))
    assert not torch.equal(result.latents, unbounded.latents)


def test_fp8_bank_stays_close_to_the_full_precision_bank():
    model = fixture_model()
    fp8 = bank_rollout(model, memory_dtype="float8_e4m3fn")
    full = bank_rollout(model)
    assert 0 < (fp8.latents - full.latents).abs().max() < 0.1


@pytest.mark.slow  # two inductor graphs: about 1-2 minutes of C++ compilation on 2 CPU cores
def test_compiled_calls_give_the_eager_latents_with_one_graph_per_call_type():
    from torch._dynamo.utils import counters

    from inference_job.config import InferenceConfig
    from pipeline.build import build_method, load_generator
    from pipeline.sample import initial_noise
    from utils.config import load_config
    from wan.geometry import LatentGeometry

    def demo(compile: bool):
        cfg = load_config(InferenceConfig, FIXTURES.parents[1] / "configs" / "demo_latentmem.yaml",
                          ["num_output_frames=24", f"compile={compile}"])
        model = load_generator(model_preset("demo"), None, torch.device("cpu"), torch.float32)
        geometry = LatentGeometry.of(model.cfg, cfg.latent_height, cfg.latent_width)
        noise, renoise = initial_noise(cfg.seed, geometry, cfg.num_output_frames, torch.device("cpu"))
        prompt = torch.randn(1, 7, model.cfg.text_dim, generator=torch.Generator().manual_seed(0))
        return generate(model, cfg, noise, prompt, renoise, build_method(cfg, model.cfg, torch.device("cpu")).policy)

    eager = demo(False)
    torch._dynamo.reset()
    graphs = counters["stats"]["unique_graphs"]
    compiled = demo(True)
    # blocks 1..7 run their later calls compiled (block 0 attends nothing); blocks 6, 7 attend retrieved frames
    assert counters["stats"]["unique_graphs"] - graphs == 2  # denoising step, recache pass
    assert (compiled.latents - eager.latents).abs().max() < 1e-5
    assert [e["retrieval"]["selected_frames"] for e in compiled.context_log[6:]] == \
        [e["retrieval"]["selected_frames"] for e in eager.context_log[6:]]


def test_clean_pass_equals_the_recache_pass_and_follows_the_scene():
    model = fixture_model()
    cfg = RolloutConfig(method="native", model_kwargs=ModelKwargs(sink_size=3))
    g = torch.Generator().manual_seed(0)
    embeds = [torch.randn(1, 10, 32, generator=g) for _ in range(2)]
    rollout = CausalRollout(model, cfg, build_context_method(cfg, RandomRetrieval).policy, embeds, (16, 8, 8), 6)
    blocks = PromptSchedule.single("").blocks(6, 3)
    attn = rollout.begin_block(blocks[0])
    x0 = rollout.denoise_block(attn, torch.randn(1, 3, 16, 8, 8, generator=g), seeded_noise(1))
    _, kv = rollout.recache(attn, x0, seeded_noise(2))
    same = rollout.clean_pass(attn.context, x0, 0)
    other = rollout.clean_pass(attn.context, x0, 1)
    for layer in range(model.cfg.num_layers):
        assert torch.equal(same.k[layer], kv.k[layer]) and torch.equal(same.v[layer], kv.v[layer])
    # layer 0's self-attention comes before any cross-attention: only later layers see the prompt
    assert torch.equal(other.k[0], kv.k[0])
    assert (other.k[1] - kv.k[1]).abs().max() > 1e-3


def live_run(model, cfg, embeds, scenes, seed=0):
    """Drive a CausalRollout as a live driver does: Blocks built by hand, a scene change is the only switch signal.
    -> (rollout, per block: the TextContext of every network call made while the block ran, switch included)."""
    calls = []
    hook = model.register_forward_pre_hook(lambda module, args: calls.append(args[2]))
    nf = cfg.num_frame_per_block
    policy = build_context_method(cfg, lambda: TopKRetrieval(AvgPoolDescriptor(), "avg_pool")).policy
    rollout = CausalRollout(model, cfg, policy, embeds, (16, 8, 8), len(scenes) * nf)
    g = torch.Generator().manual_seed(seed)
    per_block, previous = [], 0
    try:
        for index, scene in enumerate(scenes):
            block = Block(index, tuple(range(index * nf, (index + 1) * nf)), scene, scene != previous, False)
            first = len(calls)
            attn = rollout.begin_block(block)
            x0 = rollout.denoise_block(attn, torch.randn(1, nf, 16, 8, 8, generator=g), seeded_noise(seed + index))
            _, kv = rollout.recache(attn, x0, seeded_noise(100 + index))
            rollout.end_block(block, attn, x0, kv)
            per_block.append(calls[first:])
            previous = scene
    finally:
        hook.remove()
    return rollout, per_block


def same_text(a, b) -> bool:
    return all(torch.equal(ka, kb) and torch.equal(va, vb) for (ka, va), (kb, vb) in zip(a.kv, b.kv))


@pytest.mark.parametrize("method", ["native", "latentmem", "infrope", "deepforcing"])
def test_every_call_after_a_switch_uses_the_new_prompts_text_kv(method):
    """LongLive once kept the old prompt's cross-attention K/V after a switch; here every call of a block, the
    switch's own recache call included, is conditioned on the block's segment and on no other."""
    model = fixture_model()
    g = torch.Generator().manual_seed(5)
    embeds = [torch.randn(1, 10, 32, generator=g) for _ in range(3)]
    expected = [model.encode_text(e) for e in embeds]
    cfg = RolloutConfig(method=method, model_kwargs=ModelKwargs(sink_size=1, **(
        {"compression_method": "avg_pool"} if method == "latentmem" else {})))
    scenes = [0, 0, 0, 0, 0, 1, 1, 2, 2, 2]
    rollout, per_block = live_run(model, cfg, embeds, scenes)
    steps = len(cfg.denoising_step_list)
    recaches_at_switch = 0 if method == "infrope" else 1  # ∞-RoPE flushes instead
    for index, (scene, texts) in enumerate(zip(scenes, per_block)):
        switched = index > 0 and scene != scenes[index - 1]
        assert len(texts) == steps + 1 + (recaches_at_switch if switched else 0)
        for text in texts:
            assert [same_text(text, e) for e in expected] == [s == scene for s in range(3)]
    switches = [e["switch"] for e in rollout.context_log if e["switch"]]
    assert [(s["block"], s["previous_segment"], s["segment"]) for s in switches] == [(5, 0, 1), (7, 1, 2)]
    assert [e["scene"] for e in rollout.context_log] == scenes


def test_a_prompt_added_while_generating_conditions_the_blocks_that_use_its_scene():
    """A live driver: the video starts with one prompt; a typed prompt becomes scene 1 at the next block."""
    model = fixture_model()
    g = torch.Generator().manual_seed(6)
    first, typed = torch.randn(1, 10, 32, generator=g), torch.randn(1, 10, 32, generator=g)
    cfg = RolloutConfig(method="native", model_kwargs=ModelKwargs(sink_size=1))
    reference, blocks = live_run(model, cfg, [first, typed], [0, 0, 1, 1])
    calls = []
    hook = model.register_forward_pre_hook(lambda module, args: calls.append(args[2]))
    rollout = CausalRollout(model, cfg, build_context_method(cfg, RandomRetrieval).policy, [first], (16, 8, 8), 12)
    noise = torch.Generator().manual_seed(0)
    try:
        for index, scene in enumerate([0, 0, 1, 1]):
            if index == 2:
                assert rollout.add_prompt(typed) == 1
            block = Block(index, tuple(range(3 * index, 3 * index + 3)), scene, index == 2, False)
            attn = rollout.begin_block(block)
            x0 = rollout.denoise_block(attn, torch.randn(1, 3, 16, 8, 8, generator=noise), seeded_noise(index))
            _, kv = rollout.recache(attn, x0, seeded_noise(100 + index))
            rollout.end_block(block, attn, x0, kv)
    finally:
        hook.remove()
    expected = model.encode_text(typed)
    assert [same_text(t, expected) for t in calls] == [False] * 10 + [True] * 11  # the switch's recache call included
    assert [e["switch"] for e in rollout.context_log] == [e["switch"] for e in reference.context_log]


@pytest.mark.parametrize("policy", ["redundant", "stride"])
def test_every_eviction_policy_keeps_the_rollout_within_its_budget(policy):
    """A full bank drops one entry per banked frame (the guard itself: test_history_bank); only banked frames are
    retrieved, and the policy decides which frames leave."""
    budget_frames = 8
    result = bank_rollout(fixture_model(), frames=36, memory_budget_gb=(budget_frames + 0.5) * 16384 / 1e9, memory_eviction=policy)
    gone = set()
    for entry in result.context_log:
        retrieval = entry["retrieval"]
        if retrieval is None:
            continue
        assert retrieval["num_banked"] <= budget_frames
        gone |= set(retrieval["evicted_frames"])
        assert not set(retrieval["selected_frames"][0]) & gone
    oldest = bank_rollout(fixture_model(), frames=36, memory_budget_gb=(budget_frames + 0.5) * 16384 / 1e9, memory_eviction="oldest")
    assert len(gone) >= 6 and sorted(gone) != [f for e in retrievals(oldest) for f in e["evicted_frames"]]
