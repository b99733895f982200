"""Embedding-analysis scores on hand-computed cases, their ranking of known descriptors on both toy regimes, and the CLI."""
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from ae.analyze import (
    RetrievalGeometry,
    ToyVideo,
    auroc,
    cosine_similarity_matrix,
    embed_toy_videos,
    embed_video,
    load_latent_video,
    main,
    near_diagonal_pairs,
    random_embeddings,
    read_toy_videos,
    revisit_counts,
    revisit_pairs,
    scene_label_embeddings,
    toy_scores,
)
from ae.model import load_retrieval_autoencoder
from ae.train import AETrainConfig, build_model
from pipeline.descriptors import AvgPoolDescriptor
from pipeline.retrieval import select_top_k
from pipeline.rollout_config import RolloutConfig
from utils.config import load_config
from wan.kv_cache import FrameKVCache
from conftest import FIXTURES

ROOT = Path(__file__).resolve().parents[1]


def test_similarity_matrix_is_cosine_and_scale_free():
    v = torch.tensor([[3.0, 0.0], [1.0, 1.0], [0.0, -2.0]])
    expected = torch.tensor([[1, 1 / math.sqrt(2), 0], [1 / math.sqrt(2), 1, -1 / math.sqrt(2)], [0, -1 / math.sqrt(2), 1]])
    assert torch.allclose(cosine_similarity_matrix(v), expected, atol=1e-6)


def test_near_diagonal_pairs_split_same_segment_and_across_cut():
    # pairs 1..3 apart of 4 frames; segments [0, 0, 1, 1]: (0,1) (2,3) within; (1,2) (0,2) (1,3) (0,3) across
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [5.0, 5.0]])
    same, cut = near_diagonal_pairs(v, [0, 0, 1, 1])
    assert sorted(same.tolist()) == pytest.approx(sorted([0.0, 1 / math.sqrt(2)]), abs=1e-6)
    assert sorted(cut.tolist()) == pytest.approx(sorted([0.0, 1.0, 1 / math.sqrt(2), 1 / math.sqrt(2)]), abs=1e-6)
    same, cut = near_diagonal_pairs(v, [0, 0, 0, 0], max_offset=1)
    assert len(cut) == 0 and same.mean().item() == pytest.approx((1 / math.sqrt(2)) / 3, abs=1e-6)


def test_auroc_counts_ties_half_and_matches_a_hand_count():
    assert auroc(torch.tensor([3.0, 2.0]), torch.tensor([1.0, 0.0])) == 1.0
    assert auroc(torch.tensor([0.0]), torch.tensor([1.0])) == 0.0
    assert auroc(torch.tensor([1.0, 1.0]), torch.tensor([1.0])) == 0.5
    # positives 0.9, 0.4; negatives 0.5, 0.4, 0.1: pairs won 3 + 1 + 0.5 (tie) = 4.5 of 6
    assert auroc(torch.tensor([0.9, 0.4]), torch.tensor([0.5, 0.4, 0.1])) == pytest.approx(4.5 / 6)


def test_revisit_pairs_are_pairs_of_one_scene_in_two_segments():
    video = ToyVideo("v", scenes=[0, 0, 1, 0], segments=[0, 0, 1, 2])
    v = torch.eye(4)
    pos, neg = revisit_pairs(v, video)
    assert len(pos) == 2 and len(neg) == 3  # (0,3) (1,3) revisit; (0,2) (1,2) (2,3) other scenes; (0,1) same segment


def test_bank_frames_are_what_the_window_cache_evicts():
    """The pipeline's cache (wan/kv_cache.py) run block by block: its evictions are the geometry's bank."""
    geo = RetrievalGeometry.from_rollout(RolloutConfig())
    cache = FrameKVCache(1, 1, geo.window, geo.sink, 1, 1, 1, "cpu", torch.float32)
    bank = []
    for start in range(0, 60, geo.block):
        frames = tuple(range(start, start + geo.block))
        bank += [cache.frame_at(slot) for slot in cache.overflow(len(frames))]
        cache.admit(frames)
        assert bank == list(geo.bank_frames(frames[-1])), start
    assert list(geo.query_frames(10)) == [2, 5, 8]  # the newest frame before blocks 3, 6, 9


# scenes A B B C C C B B B B (segments 0 1 1 2 2 2 3 3 3 3); block 1, window 3, sink 1: the bank at query q
# holds frames 1 .. q-2; R = 1, K = 2. Queries 6, 7, 8 (scene B) have B frames 1, 2 among their candidates.
HAND = ToyVideo("hand", scenes=[0, 1, 1, 2, 2, 2, 1, 1, 1, 1], segments=[0, 1, 1, 2, 2, 2, 3, 3, 3, 3])
HAND_V = torch.tensor([[0, 0, 1.0], [1, 0, 0], [1, 0.1, 0], [0, 1, 0], [0, 1, 0], [0, 1, 0], [1, 0.5, 0], [1, 0.5, 0], [0.2, 1, 0], [1, 0, 0]])
HAND_GEO = RetrievalGeometry(block=1, window=3, sink=1, top_k=2, recent_exclude=1)


def test_revisit_counts_on_a_hand_computed_video():
    counts = revisit_counts(HAND_V, HAND, HAND_GEO)
    # q6: candidates 1 2 3 -> top 2, 1 (hits 2); q7: 1..4 -> 2, 1 (2); q8 looks like C: 1..5 -> two C frames (0)
    assert (counts.queries, counts.retrieved, counts.hits) == (3, 6, 4)
    assert counts.best == 6  # two B candidates for every query
    assert counts.chance == pytest.approx(2 * 2 / 3 + 2 * 2 / 4 + 2 * 2 / 5)
    scaled = revisit_counts(HAND_V * torch.arange(1, 11.0)[:, None], HAND, HAND_GEO)
    assert (scaled.hits, scaled.retrieved) == (4, 6)  # cosine: the scale of a descriptor does not matter


def test_revisit_counts_call_the_pipeline_selection_with_the_own_segment_guarded(monkeypatch):
    import ae.analyze

    calls = []

    def spy(query, pool, recent_exclude, k):
        calls.append((query.clone(), pool.clone(), recent_exclude, k))
        return select_top_k(query, pool, recent_exclude, k)

    monkeypatch.setattr(ae.analyze, "select_top_k", spy)
    geo = RetrievalGeometry(block=1, window=3, sink=1, top_k=2, recent_exclude=0)
    revisit_counts(HAND_V, HAND, geo)
    # every query with a bank: pool = the bank's frames, oldest first; guard = R widened over the own segment
    expected = {  # query: (bank frames, guard)
        0: ([], 0), 1: ([], 0), 2: ([], 0), 3: ([1], 0), 4: ([1, 2], 0), 5: ([1, 2, 3], 1), 6: ([1, 2, 3, 4], 0), 7: ([1, 2, 3, 4, 5], 0), 8: ([1, 2, 3, 4, 5, 6], 1),
    }
    assert len(calls) == len(expected)
    for (query, pool, guard, _), (q, (frames, want_guard)) in zip(calls, expected.items()):
        torch.testing.assert_close(query[0], HAND_V[q])
        torch.testing.assert_close(pool[0], HAND_V[torch.tensor(frames, dtype=torch.long)])
        assert guard == want_guard, q
    assert all(k == 2 for *_, k in calls)


def load_toy_module():
    spec = importlib.util.spec_from_file_location("make_toy_latents", ROOT / "toydatasets" / "make_toy_latents.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_load_latent_video_rejects_non_video_files(tmp_path):
    torch.save(torch.zeros(2, 3), tmp_path / "flat.pt")
    with pytest.raises(ValueError, match=r"flat.pt.*\[T, C, H, W\].*\[2, 3\]"):
        load_latent_video(tmp_path / "flat.pt")


@pytest.fixture(scope="module")
def regime_dirs(tmp_path_factory) -> dict:
    """Held-out toy videos of both regimes (other seeds than any training data)."""
    toy = load_toy_module()
    out = tmp_path_factory.mktemp("regimes")
    return {r: toy.write_toy_dataset(toy.regime_config(r, num_videos=3, seed=7, scene_seed=7), out / r, progress=False) for r in ("cuts", "smooth")}


@pytest.mark.parametrize("regime", ["cuts", "smooth"])
def test_scores_rank_the_scene_label_first_and_a_random_vector_last(regime_dirs, regime):
    toy_dir = regime_dirs[regime]
    videos, geo = read_toy_videos(toy_dir), RetrievalGeometry.from_rollout(RolloutConfig())
    model = build_model(load_config(AETrainConfig, ROOT / "ae" / "configs" / "toy_experiment.yaml")).eval()
    labels = scene_label_embeddings(videos)
    gen = torch.Generator().manual_seed(0)
    noisy = {name: v + 0.8 * torch.randn(v.shape, generator=gen) for name, v in labels.items()}  # informative, not perfect
    scores = {
        "label": toy_scores(labels, videos, geo),
        "noisy label": toy_scores(noisy, videos, geo),
        "avg_pool": toy_scores(embed_toy_videos(lambda x: AvgPoolDescriptor()(x[None])[0], toy_dir, videos), videos, geo),
        "random": toy_scores(random_embeddings(videos, 64, seed=0), videos, geo),
    }
    untrained = toy_scores(embed_toy_videos(lambda x: embed_video(model, x), toy_dir, videos), videos, geo)
    label = scores["label"]
    assert label["revisit_precision"] == pytest.approx(label["revisit_precision_best"])
    assert label["revisit_auroc"] == 1.0 and label["near_same"] == pytest.approx(1.0) and label["near_cut"] == 0.0
    for key in ("revisit_precision", "revisit_auroc", "near_same"):
        ranked = sorted(scores, key=lambda name: scores[name][key], reverse=True)
        assert ranked[0] == "label" and ranked[-1] == "random", (key, {n: round(s[key], 3) for n, s in scores.items()})
        assert untrained[key] < scores["label"][key]
    rand = scores["random"]
    assert abs(rand["revisit_precision"] - rand["revisit_precision_chance"]) < 0.1 and abs(rand["revisit_auroc"] - 0.5) < 0.05
    # the channel mean no longer names the scene: avg_pool is far from the best possible
    assert scores["avg_pool"]["revisit_precision"] < 0.8 * label["revisit_precision_best"]
    assert scores["avg_pool"]["revisit_auroc"] < 0.8


def test_cli_writes_png_and_reports_toy_scores(regime_dirs, tmp_path, capsys):
    toy_dir = regime_dirs["cuts"]
    out = tmp_path / "sim.png"
    argv = ["--ckpt", str(FIXTURES / "gen_ae.pt"), "--video", str(toy_dir / "latent_000001.pt"), "--out", str(out), "--toy-dir", str(toy_dir), "--top-k", "3", "--recent-exclude", "2"]
    main(argv)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    reported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    model = load_retrieval_autoencoder(FIXTURES / "gen_ae.pt").eval()
    videos = read_toy_videos(toy_dir)
    geo = RetrievalGeometry(block=3, window=12, sink=1, top_k=3, recent_exclude=2)
    expected = toy_scores({v.name: embed_video(model, load_latent_video(toy_dir / v.name)) for v in videos}, videos, geo)
    assert reported == pytest.approx({**expected, "videos": "all"})
    assert reported["num_videos"] == 3


def test_cli_scores_only_the_held_out_videos_of_the_training_folder(regime_dirs, tmp_path, capsys):
    toy_dir = regime_dirs["smooth"]
    ckpt = torch.load(FIXTURES / "gen_ae.pt", weights_only=True)
    ckpt["config"]["data_dir"] = str(toy_dir)
    ckpt["data_split"] = {"train": ["latent_000000.pt", "latent_000002.pt"], "val": ["latent_000001.pt"]}
    torch.save(ckpt, tmp_path / "trained_here.pt")
    argv = ["--ckpt", str(tmp_path / "trained_here.pt"), "--video", str(toy_dir / "latent_000001.pt"), "--out", str(tmp_path / "sim.png"), "--toy-dir", str(toy_dir)]
    held_out = json.loads(main(argv) and capsys.readouterr().out.strip().splitlines()[-1])
    assert held_out["num_videos"] == 1 and held_out["videos"] == "validation videos of the checkpoint"
    everything = main([*argv, "--all-videos"])
    assert everything["num_videos"] == 3 and everything["revisit_precision"] != held_out["revisit_precision"]


def test_cli_without_toy_dir_reports_the_video_near_diagonal(tmp_path, capsys):
    video = torch.load(FIXTURES / "gen_latentmem_ae.pt", weights_only=True)["output"][0]  # [60, 16, 8, 8]
    torch.save(video, tmp_path / "rollout.pt")
    main(["--ckpt", str(FIXTURES / "gen_ae.pt"), "--video", str(tmp_path / "rollout.pt"), "--out", str(tmp_path / "sim.png")])
    reported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    descriptors = torch.load(FIXTURES / "gen_latentmem_ae.pt", weights_only=True)["descriptors"][0]
    u = torch.nn.functional.normalize(descriptors, dim=-1)
    pairs = torch.cat([(u[k:] * u[:-k]).sum(dim=1) for k in (1, 2, 3)])
    assert reported["near_diagonal"] == pytest.approx(pairs.mean().item(), abs=1e-5)


def test_bad_arguments_give_one_line(tmp_path, capsys):
    import pytest as _pytest

    from ae import analyze

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00not a checkpoint" * 64)
    cases = [
        (["--ckpt", str(tmp_path / "nope.pt"), "--video", str(bad), "--out", str(tmp_path / "x.png")], "not found at"),
        (["--ckpt", str(bad), "--video", str(bad), "--out", str(tmp_path / "x.png")], "file is corrupt or not a checkpoint"),
        (["--ckpt", str(bad), "--video", str(bad), "--out", str(tmp_path / "x.png"), "--top-k", "0"], "--top-k"),
    ]
    for argv, expected in cases:  # before: tracebacks (MissingAssetError, UnpicklingError)
        with _pytest.raises(SystemExit) as exit_:
            analyze.main(argv)
        assert str(exit_.value).startswith("error: ") and expected in str(exit_.value)
