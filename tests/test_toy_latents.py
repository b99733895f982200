"""Toy latent generator: determinism, layout, regimes, scene schedule with revisits after long gaps,
scene identity in texture rather than channel means, drifting segments."""
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
    assert scenes["segments"] == {name: toy.segment_index(ids) for name, ids in scenes["videos"].items()}
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


def test_video_seed_and_scene_seed_are_separate(toy):
    base = toy.ToyConfig()
    video = lambda cfg: toy.make_video(cfg, toy.make_scene_bank(cfg), 0)  # noqa: E731
    (a, ids_a), (b, ids_b), (c, ids_c) = video(base), video(toy.ToyConfig(seed=1)), video(toy.ToyConfig(scene_seed=1))
    assert ids_c == ids_a and (a - c).abs().max() > 0.5  # other scenes, same schedule and camera
    assert ids_b != ids_a  # another schedule from the same scene bank
    torch.testing.assert_close(toy.make_scene_bank(toy.ToyConfig(seed=1)).freqs, toy.make_scene_bank(base).freqs, rtol=0, atol=0)


def test_segment_index_numbers_runs_of_one_scene(toy):
    assert toy.segment_index([3, 3, 1, 1, 1, 3, 0]) == [0, 0, 1, 1, 1, 2, 3]


def test_video_does_not_depend_on_number_of_videos(toy, tmp_path):
    toy.write_toy_dataset(toy.ToyConfig(num_videos=1, frames=20), tmp_path / "one", progress=False)
    toy.write_toy_dataset(toy.ToyConfig(num_videos=3, frames=20), tmp_path / "three", progress=False)
    assert (tmp_path / "one" / "latent_000000.pt").read_bytes() == (tmp_path / "three" / "latent_000000.pt").read_bytes()


@pytest.mark.parametrize("regime", ["cuts", "smooth"])
def test_regimes_revisit_scenes_only_after_gaps_longer_than_the_window(toy, regime):
    cfg = toy.regime_config(regime)
    revisits = 0
    for i in range(cfg.num_videos):
        ids = toy.scene_schedule(cfg, toy.video_generator(cfg, i))
        seg = toy.segment_index(ids)
        assert len(ids) == cfg.frames and all(a != b for a, b in zip(segments(ids), segments(ids)[1:]))
        for t in range(1, len(ids)):
            if seg[t] != seg[t - 1] and ids[t] in ids[:t]:  # a revisit starts: the scene was off screen long enough
                last = max(u for u in range(t) if ids[u] == ids[t])
                assert t - 1 - last >= cfg.min_revisit_gap
                revisits += 1
    assert cfg.min_revisit_gap > 12  # the attention window of the default rollout
    assert revisits >= cfg.num_videos


def test_cuts_regime_cuts_most_training_chunks_and_smooth_regime_few(toy):
    def cut_share(cfg, seq_len=8):
        cut = total = 0
        for i in range(cfg.num_videos):
            seg = toy.segment_index(toy.scene_schedule(cfg, toy.video_generator(cfg, i)))
            cut += sum(seg[s] != seg[s + seq_len - 1] for s in range(len(seg) - seq_len + 1))
            total += len(seg) - seq_len + 1
        return cut / total

    cuts, smooth = toy.regime_config("cuts"), toy.regime_config("smooth")
    assert cut_share(cuts) > 0.7 and cut_share(smooth) < 0.25
    assert smooth.noise < cuts.noise
    with pytest.raises(ValueError, match="unknown toy regime 'calm'"):
        toy.regime_config("calm")


def test_revisit_probability_extremes(toy):
    always = toy.ToyConfig(frames=80, revisit_prob=1.0, min_segment=5, max_segment=5, min_revisit_gap=6)
    segs = segments(toy.scene_schedule(always, toy.video_generator(always, 0)))
    assert len(segs) == 16 and len(set(segs)) == 3  # a revisit as soon as a scene has been away 6 frames: A B C A B C ...
    never = toy.ToyConfig(frames=80, num_scenes=20, revisit_prob=0.0, min_segment=5, max_segment=5)
    segs = segments(toy.scene_schedule(never, toy.video_generator(never, 0)))
    assert len(segs) == len(set(segs)) == 16


@pytest.mark.parametrize("regime", ["cuts", "smooth"])
def test_frames_drift_within_a_segment_and_jump_between_segments(toy, regime):
    cfg = toy.regime_config(regime, frames=96)
    latents, ids = toy.make_video(cfg, toy.make_scene_bank(cfg), 0)
    step = (latents[1:] - latents[:-1]).flatten(1).norm(dim=1) / latents[0].numel() ** 0.5
    change = torch.tensor([a != b for a, b in zip(ids, ids[1:])])
    noise_floor = 2**0.5 * cfg.noise  # two independent noise draws
    assert step[~change].max() < noise_floor + 0.25 < 0.9 < step[change].min()
    clean = toy.regime_config(regime, frames=96, noise=0.0)
    clean_latents, _ = toy.make_video(clean, toy.make_scene_bank(clean), 0)
    assert ((clean_latents[1:] - clean_latents[:-1]).flatten(1).norm(dim=1)[~change] > 0).all()  # the camera moves


def test_scene_identity_is_in_texture_not_in_channel_means(toy):
    cfg = toy.ToyConfig(noise=0.0)
    bank = toy.make_scene_bank(cfg)
    assert torch.count_nonzero(bank.offsets) == 0  # offsets are off by default
    frames = torch.stack([toy.render_scene(bank, s, torch.tensor([dy, 0.0], dtype=torch.float64), cfg.height, cfg.width)
                          for s in range(cfg.num_scenes) for dy in (0.0, 2.0)])  # [2 S, C, H, W]
    means = frames.mean(dim=(-2, -1))
    assert means.abs().mean() < 0.35 * frames.std()  # the mean of a frame is small beside its texture
    moved = (means[1::2] - means[0::2]).norm(dim=1)  # and a camera move changes it
    assert moved.median() > 0.3 * means[0::2].norm(dim=1).median()
    with_offsets = toy.make_scene_bank(toy.ToyConfig(offset_std=0.5))
    assert 0.3 < with_offsets.offsets.std() < 0.7


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
