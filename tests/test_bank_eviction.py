import torch

from pipeline.bank_eviction import OldestEviction, RedundantEviction, StrideEviction, trailing_zeros


def test_oldest_evicts_the_first_entry():
    assert OldestEviction().victim([5, 6, 7], None, 2) == 0


def test_stride_thins_out_to_every_other_frame_then_every_fourth():
    frames, victims = list(range(1, 9)), []
    policy = StrideEviction()
    while len(frames) > 2:
        victims.append(frames.pop(policy.victim(frames, None, len(frames))))
    assert victims == [1, 3, 5, 7, 2, 6]
    assert frames == [4, 8]
    assert trailing_zeros(12) == 2 and trailing_zeros(0) > 32


def test_stride_only_considers_candidates():
    # frame 9 is odd but inside the guard (not a candidate)
    assert StrideEviction().victim([2, 4, 6, 9], None, 3) == 0


def test_redundant_drops_a_near_duplicate_and_keeps_distinct_moments():
    d = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0.2, 1.0], [0, 0, 1.0]]).unsqueeze(0)
    # entries 2 and 3 are near-duplicates; entry 3 is in the guard, so entry 2 goes
    assert RedundantEviction().victim([1, 2, 3, 4], d, 3) == 2


def test_redundant_averages_over_the_batch():
    d0 = torch.tensor([[1.0, 0], [1.0, 0.01], [0, 1.0]])
    d1 = torch.tensor([[1.0, 0], [0, 1.0], [0.01, 1.0]])
    # sample 0 says entry 0 or 1, sample 1 says 1 or 2: entry 1 is redundant for both
    assert RedundantEviction().victim([1, 2, 3], torch.stack([d0, d1]), 3) == 1


def test_redundant_without_descriptors_falls_to_the_oldest():
    assert RedundantEviction().victim([3, 4], None, 2) == 0
