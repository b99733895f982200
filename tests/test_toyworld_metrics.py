import math

import torch

from toydatasets.toy_world import Trajectory, WorldConfig, make_world, views
from toyworld.metrics import aligned_difference, first_visits, frame_errors, nanmean, retrieval_hits, revisit_consistency

CFG = WorldConfig()


def loop_positions(frames: int) -> torch.Tensor:
    return Trajectory("loop", (0, 0), (0, 1)).positions(CFG, frames)[None]  # [1, F, 2]


def test_frame_errors_hand_case():
    truth = torch.zeros(1, 2, 1, 2, 2)
    gen = truth.clone()
    gen[0, 1, 0, 0, 0] = 2.0  # one cell off by 2 in frame 1: MSE 4 / 4
    assert torch.equal(frame_errors(gen, truth), torch.tensor([[0.0, 1.0]]))


def test_first_visits_of_a_loop_point_one_period_back():
    period, window = CFG.loop_period, 12
    first = first_visits(loop_positions(3 * period), CFG, window, min_overlap=0.5)[0]
    assert (first[: period - 2] == -1).all()  # the first lap revisits nothing ...
    assert first[period - 2] == first[period - 1] == 0  # ... until the view wraps onto half of frame 0's
    t = torch.arange(period, 3 * period)
    assert torch.equal(first[period:], t % period)  # the earliest frame with the same view
    # with a smaller overlap threshold, frames whose view shares a quarter with an old one count too
    assert first_visits(loop_positions(period), CFG, window, 0.25)[0, period - 3] == 0


def test_aligned_difference_compares_only_shared_cells():
    world = make_world(CFG, 0)
    a_pos, b_pos = torch.tensor([4, 4]), torch.tensor([6, 1])  # b is 2 down and 3 left of a
    a, b = views(world, a_pos, CFG.view), views(world, b_pos, CFG.view)
    assert aligned_difference(a, b, a_pos, b_pos, CFG) == 0.0
    b_off = b.clone()
    b_off[:, :, 3:] += 1.0  # cells of b that a also shows are rows 0..5, cols 3..7
    assert math.isclose(aligned_difference(a, b_off, a_pos, b_pos, CFG), 1.0, rel_tol=1e-6)
    assert math.isnan(aligned_difference(a, b, a_pos, torch.tensor([4, 12]), CFG))


def test_revisit_consistency_zero_for_a_repeating_video_and_skips_opening_first_visits():
    period = CFG.loop_period
    positions = loop_positions(2 * period)
    first = first_visits(positions, CFG, 12, 0.5)
    video = views(make_world(CFG, 0), positions, CFG.view)  # [1, F, C, V, V]: true views repeat
    cons = revisit_consistency(video, positions, first, CFG, from_frame=6)
    assert nanmean(cons) == 0.0
    assert torch.isnan(cons[0, period : period + 6]).all()  # first visits 0..5 were given, not generated
    noisy = video.clone()
    noisy[:, period + 10] += 0.5
    assert math.isclose(nanmean(revisit_consistency(noisy, positions, first, CFG, 6)[:, period + 10]), 0.25, rel_tol=1e-5)


def test_retrieval_hits_count_only_revisit_blocks_and_overlapping_frames():
    period = CFG.loop_period
    positions = loop_positions(2 * period)
    revisit = first_visits(positions, CFG, 12, 0.5) >= 0
    log = [  # context-log entries: latentmem's decision under `retrieval`, None where nothing was retrieved
        {"first_frame": 0, "retrieval": None},
        {"first_frame": period + 3, "retrieval": {"block_start_frame": period + 3, "selected_frames": [[3, 4, 10, 20]]}},  # 3, 4 overlap frames 27..29; 10, 20 do not
        {"first_frame": 12, "retrieval": {"block_start_frame": 12, "selected_frames": [[1, 2]]}},  # not a revisit block: ignored
        {"first_frame": period + 6},  # another method's entry: no retrieval key
    ]
    assert retrieval_hits(log, positions, revisit, CFG, block=3, min_overlap=0.25) == (2, 4)
