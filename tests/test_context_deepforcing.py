"""Deep Forcing policy: no reference code exists, so these properties are the proof (SPEC_NEXT §1.3)."""
import torch

from conftest import fixture_generator, no_clean_pass, seeded_noise
from pipeline.build import build_context_method
from pipeline.context.deepforcing import AttentionScore, DeepForcingPolicy
from pipeline.context.policy import CacheGeometry, PolicySetup
from pipeline.prompt_schedule import PromptSchedule
from pipeline.retrieval import RandomRetrieval
from pipeline.rollout import generate
from pipeline.rollout_config import ModelKwargs, RolloutConfig
from wan.rope import Rope3D

T = 16  # tokens per frame of the fixtures' 8 x 8 latents
WINDOW = 12


class RecordingScore:
    def __init__(self, inner):
        self.inner, self.last = inner, None

    def __call__(self, q, k, candidates, frames):
        self.last = self.inner(q, k, candidates, frames)
        return self.last


class Probe(DeepForcingPolicy):
    """Records every compression: layer, candidates (frame, token), their scores, the kept set."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.records = []

    def compress(self, layer, q, k, keep):
        store = self.stores[layer]
        before = list(zip(store.frame[0].tolist(), store.token[0].tolist()))
        super().compress(layer, q, k, keep)
        kept = list(zip(store.frame[0].tolist(), store.token[0].tolist()))
        self.records.append((layer, before, self.scorer.last[0].tolist(), keep, kept))


def run(num_frames=36, scorer=None, hysteresis=False, policy_cls=Probe, seed=4):
    model = fixture_generator()
    cfg = RolloutConfig(method="deepforcing", model_kwargs=ModelKwargs(df_hysteresis=hysteresis))
    noise = torch.randn(1, num_frames, 16, 8, 8, generator=torch.Generator().manual_seed(seed))
    prompt = torch.randn(1, 10, 32, generator=torch.Generator().manual_seed(5))
    made = []

    def factory(setup):
        made.append(policy_cls(setup, window=WINDOW, sink_size=1, recent=2, hysteresis=hysteresis,
                               scorer=scorer or RecordingScore(AttentionScore(probabilities=True))))
        return made[0]

    result = generate(model, cfg, noise, prompt, seeded_noise(6), factory)
    return result, made[0]


def test_kept_set_is_the_brute_force_top_c_of_the_scores_per_layer():
    result, policy = run()
    assert len(policy.records) == 2 * 8  # 2 layers x blocks 4..11 (the window overflows from block 4)
    for layer, before, scores, keep, kept in policy.records:
        assert keep == 6 * T and len(kept) == 6 * T  # C = 12 - 1 sink - 2 recent - 3 block = 6 frames' worth
        ranked = sorted(range(len(before)), key=lambda i: -scores[i])
        assert sorted(kept) == sorted(before[i] for i in ranked[:keep])
        assert kept == sorted(kept)  # kept in temporal (frame, token) order
    by_layer = {}
    for layer, _, _, _, kept in policy.records:
        by_layer.setdefault(layer, []).append(kept)
    assert by_layer[0] != by_layer[1], "each layer selects its own tokens"


def test_attention_score_equals_the_full_softmax_summed_over_queries_and_averaged_over_heads():
    q, k = torch.randn(2, 20, 4, 8), torch.randn(2, 30, 4, 8)
    probs = torch.einsum("bqnd,bknd->bnqk", q, k).mul(8 ** -0.5).softmax(-1)
    expected = probs[..., 5:25].sum(2).mean(1)
    assert torch.allclose(AttentionScore(True)(q, k, slice(5, 25), None), expected, atol=1e-6)
    logits = torch.einsum("bqnd,bknd->bnqk", q, k).mul(8 ** -0.5)[..., 5:25].sum(2).mean(1)
    assert torch.allclose(AttentionScore(False)(q, k, slice(5, 25), None), logits, atol=1e-5)


def attended_tokens(entry):
    """{position: tokens} and the frames of the keys (cached and current) of one context-log entry."""
    per_position = {}
    for frame, position, tokens in entry["keys"]:
        per_position[position] = per_position.get(position, 0) + tokens
    for frame, position in entry["queries"]:
        per_position[position] = per_position.get(position, 0) + T
    return per_position


def test_sink_and_recent_never_dropped_budget_kept_positions_contiguous():
    result, _ = run()
    for entry in result.context_log:
        first = entry["first_frame"]
        per_position = attended_tokens(entry)
        assert sum(per_position.values()) <= WINDOW * T
        assert sorted(per_position) == list(range(len(per_position)))  # contiguous from 0
        assert all(n == T for n in per_position.values())  # every position holds one frame's worth
        positions = [p for _, p, _ in entry["keys"]] + [p for _, p in entry["queries"]]
        assert positions == sorted(positions)
        if first > 0:
            assert entry["keys"][0] == [0, 0, T]  # the sink, whole, at position 0
        if first >= 3:  # the two newest clean frames, whole, right before the block
            last = max(per_position)
            assert entry["keys"][-2:] == [[first - 2, last - 4, T], [first - 1, last - 3, T]]


def test_newest_first_scorer_reproduces_the_native_window_and_infrope_exactly():
    newest, _ = run(scorer=lambda q, k, candidates, frames: frames.float(), policy_cls=DeepForcingPolicy)
    model = fixture_generator()
    noise = torch.randn(1, 36, 16, 8, 8, generator=torch.Generator().manual_seed(4))
    prompt = torch.randn(1, 10, 32, generator=torch.Generator().manual_seed(5))
    results = {}
    for method in ("native", "infrope"):
        cfg = RolloutConfig(method=method)
        results[method] = generate(model, cfg, noise, prompt, seeded_noise(6), build_context_method(cfg, RandomRetrieval).policy)
    for ours, native, infrope in zip(newest.context_log, results["native"].context_log, results["infrope"].context_log):
        assert sorted(k[0] for k in ours["keys"]) == [k[0] for k in native["keys"]]
        assert ours["keys"] == infrope["keys"] and ours["queries"] == infrope["queries"]
    assert (newest.latents - results["infrope"].latents).abs().max() < 1e-5


def test_hysteresis_shrinks_by_a_block_and_lets_the_region_grow_back():
    _, policy = run(hysteresis=True)
    compressions = [(layer, keep) for layer, _, _, keep, _ in policy.records if layer == 0]
    assert all(keep == 3 * T for _, keep in compressions)
    # compress at block 4, grow to 6 frames' worth at block 5, compress again at 6: every other block
    assert len(compressions) == 4  # blocks 4, 6, 8, 10


def test_geometry_without_room_for_compressed_tokens_raises():
    geometry = CacheGeometry(1, 1, 1, (1, 1), 1, 6, 9, 3, torch.device("cpu"), torch.float32)
    try:
        DeepForcingPolicy(PolicySetup(geometry, Rope3D(6, 8), 0, no_clean_pass), window=6, sink_size=1, recent=2)
    except ValueError as err:
        assert "leaves 0 frames for compressed tokens" in str(err)
    else:
        raise AssertionError("expected a ValueError")


def test_deepforcing_reads_the_one_line_schedule_syntax_like_every_method():
    method = build_context_method(RolloutConfig(method="deepforcing"), RandomRetrieval)
    assert method.parse_prompt("a | b[3s#]").prompts == ["a", "b"]
    assert method.parse_prompt("a plain prompt; with a semicolon") == PromptSchedule.single("a plain prompt; with a semicolon")


def test_batch_rows_select_their_own_tokens_and_match_single_runs():
    model = fixture_generator()
    cfg = RolloutConfig(method="deepforcing")
    noise = torch.randn(2, 18, 16, 8, 8, generator=torch.Generator().manual_seed(7))
    prompt = torch.randn(2, 10, 32, generator=torch.Generator().manual_seed(8))
    policy = build_context_method(cfg, RandomRetrieval).policy

    def draws(seeds):
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        return lambda shape: torch.stack([torch.randn(shape[1:], generator=g) for g in gens])

    batched = generate(model, cfg, noise, prompt, draws([1, 2]), policy)
    for i in range(2):
        single = generate(model, cfg, noise[i : i + 1], prompt[i : i + 1], draws([1 + i]), policy)
        assert (batched.latents[i] - single.latents[0]).abs().max() < 1e-4
