"""Embedding-analysis metrics on hand-computed cases, and the CLI on a tiny toy dataset."""
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from ae.analyze import (
    cosine_similarity_matrix,
    embed_video,
    load_latent_video,
    main,
    near_diag_similarity,
    revisit_precision,
)
from ae.model import load_retrieval_autoencoder
from conftest import FIXTURES

ROOT = Path(__file__).resolve().parents[1]

# frames 0..5 in 2-D; scene ids [0, 0, 1, 1, 0, 1]
FRAMES = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 1.0], [1.0, 0.05], [0.6, 0.8]])
SCENES = [0, 0, 1, 1, 0, 1]


def test_similarity_matrix_is_cosine_and_scale_free():
    v = torch.tensor([[3.0, 0.0], [1.0, 1.0], [0.0, -2.0]])
    expected = torch.tensor([[1, 1 / math.sqrt(2), 0], [1 / math.sqrt(2), 1, -1 / math.sqrt(2)], [0, -1 / math.sqrt(2), 1]])
    assert torch.allclose(cosine_similarity_matrix(v), expected, atol=1e-6)


def test_near_diag_similarity_averages_pairs_one_to_three_apart():
    # pairs: (0,1) 0, (1,2) 0, (2,3) 1/sqrt2, (0,2) 1, (1,3) 1/sqrt2, (0,3) 1/sqrt2
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [5.0, 5.0]])
    assert near_diag_similarity(v) == pytest.approx((1 + 3 / math.sqrt(2)) / 6, abs=1e-6)
    assert near_diag_similarity(v, max_offset=1) == pytest.approx((1 / math.sqrt(2)) / 3, abs=1e-6)


def test_near_diag_similarity_of_two_frames_uses_the_only_pair():
    assert near_diag_similarity(torch.tensor([[1.0, 0.0], [1.0, 1.0]])) == pytest.approx(1 / math.sqrt(2), abs=1e-6)


def test_revisit_precision_respects_recency_guard_and_top_k():
    # R=2, K=2: t=3 sees frame 0 (scene 0 != 1): 0/1; t=4 sees 0,1 (both scene 0 == 0): 2/2;
    # t=5 sees 0..2 with cosines 0.6, 0.685, 0.8 -> frames 2 (hit), 1 (miss): 1/2.  Pooled: 3/5.
    assert revisit_precision(FRAMES, SCENES, top_k=2, recent_exclude=2) == pytest.approx(3 / 5)


def test_revisit_precision_without_guard_takes_nearest_past_frame():
    # R=0, K=1: t=1 -> 0 (hit), t=2 -> 1 (miss), t=3 -> 2 (hit), t=4 -> 0 (hit), t=5 -> 3 (hit)
    assert revisit_precision(FRAMES, SCENES, top_k=1, recent_exclude=0) == pytest.approx(4 / 5)


def test_revisit_precision_ignores_embedding_scale():
    scaled = FRAMES * torch.tensor([[1.0], [7.0], [0.1], [3.0], [2.0], [0.5]])
    assert revisit_precision(scaled, SCENES, top_k=2, recent_exclude=2) == pytest.approx(3 / 5)


def test_revisit_precision_rejects_bad_inputs():
    with pytest.raises(ValueError, match="scene ids"):
        revisit_precision(FRAMES, SCENES[:5])
    with pytest.raises(ValueError, match="recent_exclude"):
        revisit_precision(FRAMES, SCENES, top_k=2, recent_exclude=5)


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


def test_cli_writes_png_and_reports_toy_metrics(tmp_path, capsys):
    toy = load_toy_module()
    toy_dir = tmp_path / "toy"
    toy.write_toy_dataset(toy.ToyConfig(num_videos=2, frames=24, min_segment=4, max_segment=6, seed=3), toy_dir, progress=False)
    out = tmp_path / "sim.png"
    argv = ["--ckpt", str(FIXTURES / "gen_ae.pt"), "--video", str(toy_dir / "latent_000001.pt"), "--out", str(out), "--toy-dir", str(toy_dir), "--top-k", "3", "--recent-exclude", "2"]
    main(argv)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    reported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    model = load_retrieval_autoencoder(FIXTURES / "gen_ae.pt").eval()
    scenes = json.loads((toy_dir / "scenes.json").read_text())["videos"]
    embeddings = {name: embed_video(model, load_latent_video(toy_dir / name)) for name in scenes}
    expected_near = sum(near_diag_similarity(v) for v in embeddings.values()) / 2
    expected_precision = sum(revisit_precision(embeddings[n], ids, 3, 2) for n, ids in scenes.items()) / 2
    assert reported["near_diag_similarity"] == pytest.approx(expected_near, abs=1e-6)
    assert reported["revisit_precision"] == pytest.approx(expected_precision, abs=1e-9)
    assert (reported["num_videos"], reported["top_k"], reported["recent_exclude"]) == (2, 3, 2)


def test_cli_without_toy_dir_reports_the_video_near_diagonal(tmp_path, capsys):
    video = torch.load(FIXTURES / "gen_latentmem_ae.pt", weights_only=True)["output"][0]  # [60, 16, 8, 8]
    torch.save(video, tmp_path / "rollout.pt")
    main(["--ckpt", str(FIXTURES / "gen_ae.pt"), "--video", str(tmp_path / "rollout.pt"), "--out", str(tmp_path / "sim.png")])
    reported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    descriptors = torch.load(FIXTURES / "gen_latentmem_ae.pt", weights_only=True)["descriptors"][0]
    assert reported["near_diag_similarity"] == pytest.approx(near_diag_similarity(descriptors), abs=1e-5)


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
