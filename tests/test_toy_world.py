import pytest
import torch

from toydatasets.toy_world import (
    WorldConfig, Trajectory, coverage, make_world, sample_trajectory, to_rgb, torus_delta, view_overlap, views,
)

CFG = WorldConfig()


def test_world_is_deterministic_per_seed_and_normalised():
    a, b, other = make_world(CFG, 3), make_world(CFG, 3), make_world(CFG, 4)
    assert torch.equal(a, b)
    assert a.shape == (CFG.channels, CFG.height, CFG.width)
    assert (a - other).abs().mean() > 0.5
    assert abs(a.mean().item()) < 1e-5 and abs(a.std().item() - 1) < 1e-5


def test_trajectories_are_deterministic_and_move_by_speed():
    trajs = [sample_trajectory(CFG, kind, torch.Generator().manual_seed(5)) for kind in ("loop", "loop", "line")]
    assert trajs[0] == trajs[1]
    pos = trajs[2].positions(CFG, 10)
    step = torus_delta(pos[:-1], pos[1:], torch.tensor([CFG.height, CFG.width])).abs()
    assert set(step.flatten().tolist()) <= {0, CFG.speed} and (step.sum(dim=1) > 0).all()
    assert (pos % CFG.speed == 0).all()  # patch-aligned starts


def test_views_read_the_world_with_wraparound():
    world = make_world(CFG, 0)
    pos = torch.tensor([[CFG.height - 3, CFG.width - 5]])
    v = views(world, pos, CFG.view)[0]
    assert v.shape == (CFG.channels, CFG.view, CFG.view)
    assert torch.equal(v[:, 0, 0], world[:, CFG.height - 3, CFG.width - 5])
    assert torch.equal(v[:, 3, 5], world[:, 0, 0])  # wrapped on both axes
    assert torch.equal(v[:, 7, 7], world[:, 4, 2])


def test_loop_revisit_reproduces_the_same_true_view_and_lines_never_revisit():
    world = make_world(CFG, 1)
    period = CFG.loop_period
    loop = Trajectory("loop", (10, 6), (0, -1)).positions(CFG, 3 * period)
    seen = views(world, loop, CFG.view)
    assert torch.equal(seen[:period], seen[period : 2 * period]) and torch.equal(seen[:period], seen[2 * period :])
    assert not torch.equal(seen[0], seen[1])
    for direction in ((1, 0), (-1, 1)):
        line = Trajectory("line", (0, 0), direction).positions(CFG, 72)
        overlap = view_overlap(line[:, None], line[None], CFG)
        far = torch.arange(72)[:, None] - torch.arange(72)[None] >= CFG.view // CFG.speed
        assert overlap[far].max() == 0  # nothing seen before comes back


def test_view_overlap_hand_cases_and_coverage_cosine_equals_overlap():
    p = torch.tensor([[0, 0], [0, 2], [2, 2], [0, 8], [0, CFG.width - 4], [CFG.height - 2, 0]])
    expected = torch.tensor([1.0, 6 / 8, 36 / 64, 0.0, 4 / 8, 6 / 8])
    assert torch.allclose(view_overlap(p[:1], p, CFG), expected)
    cov = coverage(p, CFG)
    assert (cov.sum(dim=1) == CFG.view**2).all()
    cos = torch.nn.functional.cosine_similarity(cov[:1], cov, dim=1)
    assert torch.allclose(cos, expected)


def test_rgb_viewer_is_fixed_and_upsamples():
    frames = make_world(CFG, 2)[:, :8, :8][None]
    rgb = to_rgb(frames, scale=4)
    assert rgb.shape == (1, 32, 32, 3) and rgb.dtype == torch.uint8
    assert torch.equal(rgb, to_rgb(frames, scale=4))
    assert torch.equal(rgb[0, :4, :4], rgb[0, :1, :1].expand(4, 4, 3))


def test_bad_world_config_is_rejected():
    with pytest.raises(ValueError, match="multiples of speed"):
        make_world(WorldConfig(width=47), 0)
