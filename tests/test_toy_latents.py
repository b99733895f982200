"""Toy latent generator: determinism, layout, scene schedule with revisits, smooth segments."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "toydatasets" / "make_toy_latents.py"


@pytest.fixture(scope="module")
def toy():
    spec = importlib.util.spec_from_file_location("make_toy_latents", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def segments(ids):
    """Scene id of each run of equal ids."""
    return [s for i, s in enumerate(ids) if i == 0 or ids[i - 1] != s]


def test_layout_shapes_and_ground_truth(toy, tmp_path):
    cfg = toy.ToyConfig(num_videos=3, frames=40, height=8, width=16, seed=1)
    toy.write_toy_dataset(cfg, tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latent_000000.pt", "latent_000001.pt", "latent_000002.pt", "scenes.json"]
    scenes = json.loads((tmp_path / "scenes.json").read_text())
    assert scenes["config"]["seed"] == 1
    for name, ids in scenes["videos"].items():
        latents = torch.load(tmp_path / name, weights_only=True)
        assert latents.shape == (40, 16, 8, 16) and latents.dtype == torch.float32
        assert len(ids) == 40 and set(ids) <= set(range(cfg.num_scenes))
        assert 0.5 < latents.std().item() < 2.0


def test_cli_same_seed_gives_byte_identical_files(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["--num-videos", "2", "--frames", "20", "--seed", "5"]
    for out in ("a", "b"):
        subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / out), *args], check=True, env=env, capture_output=True)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["latent_000000.pt", "latent_000001.pt", "scenes.json"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_other_seed_gives_other_videos(toy):
    a, _ = toy.make_video(toy.ToyConfig(seed=0), toy.make_scene_bank(toy.ToyConfig(seed=0)), 0)
    b, _ = toy.make_video(toy.ToyConfig(seed=1), toy.make_scene_bank(toy.ToyConfig(seed=1)), 0)
    assert (a - b).abs().max() > 0.5


def test_video_does_not_depend_on_number_of_videos(toy, tmp_path):
    toy.write_toy_dataset(toy.ToyConfig(num_videos=1, frames=20), tmp_path / "one", progress=False)
    toy.write_toy_dataset(toy.ToyConfig(num_videos=3, frames=20), tmp_path / "three", progress=False)
    assert (tmp_path / "one" / "latent_000000.pt").read_bytes() == (tmp_path / "three" / "latent_000000.pt").read_bytes()


def test_default_dataset_revisits_earlier_scenes(toy):
    cfg = toy.ToyConfig()
    revisits = 0
    for i in range(cfg.num_videos):
        segs = segments(toy.scene_schedule(cfg, toy.video_generator(cfg, i)))
        assert all(a != b for a, b in zip(segs, segs[1:]))  # a new segment always changes scene
        revisits += sum(s in segs[:j] for j, s in enumerate(segs))
    assert revisits >= cfg.num_videos


def test_revisit_probability_extremes(toy):
    always = toy.ToyConfig(frames=80, revisit_prob=1.0, min_segment=5, max_segment=5)
    segs = segments(toy.scene_schedule(always, toy.video_generator(always, 0)))
    assert len(segs) == 16 and len(set(segs)) == 2  # after two scenes, only revisits (alternating)
    never = toy.ToyConfig(frames=80, num_scenes=20, revisit_prob=0.0, min_segment=5, max_segment=5)
    segs = segments(toy.scene_schedule(never, toy.video_generator(never, 0)))
    assert len(segs) == len(set(segs)) == 16


def test_frames_change_slowly_within_a_segment_and_jump_between_segments(toy):
    cfg = toy.ToyConfig(frames=96)
    latents, ids = toy.make_video(cfg, toy.make_scene_bank(cfg), 0)
    step = (latents[1:] - latents[:-1]).flatten(1).norm(dim=1) / latents[0].numel() ** 0.5
    change = torch.tensor([a != b for a, b in zip(ids, ids[1:])])
    assert step[~change].max() < 0.25 < 0.8 < step[change].min()


def test_invalid_config_is_rejected(toy):
    with pytest.raises(ValueError, match="min_segment"):
        toy.ToyConfig(min_segment=8, max_segment=4).validate()


def test_bad_sizes_give_one_usage_line(toy, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:  # before: a ValueError traceback
        toy.main(["--num-videos", "0", "--out", str(tmp_path / "toy")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "toy config sizes must be >= 1" in err and "Traceback" not in err
    assert not (tmp_path / "toy").exists()
