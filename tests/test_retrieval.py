import torch

from pipeline.retrieval import cosine_to_pool, select_random, select_top_k


def test_cosine_divides_by_norm_plus_epsilon():
    q = torch.tensor([[3.0, 4.0]])
    pool = torch.tensor([[[3.0, 4.0], [0.0, 2.0], [0.0, 0.0]]])
    sims = cosine_to_pool(q, pool)
    assert torch.allclose(sims, torch.tensor([[25 / (5 + 1e-8) ** 2, 8 / ((5 + 1e-8) * (2 + 1e-8)), 0.0]]))


def test_recency_guard_skips_latest_entries():
    # the newest entries are the best matches but sit inside the recency guard
    pool = torch.tensor([[[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [1.0, 0.01], [1.0, 0.0]]])
    sel = select_top_k(torch.tensor([[1.0, 0.0]]), pool, recent_exclude=2, k=2)
    assert sel.pool_indices.tolist() == [[0, 1]]
    assert torch.allclose(sel.similarities, torch.tensor([[1.0, 0.8]]), atol=1e-6)


def test_k_larger_than_eligible_pool_returns_all_eligible_sorted():
    pool = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [0.6, 0.8], [1.0, 0.0]]])
    sel = select_top_k(torch.tensor([[1.0, 0.0]]), pool, recent_exclude=1, k=6)
    assert sel.pool_indices.tolist() == [[1, 2, 0]]
    assert torch.all(sel.similarities[:, :-1] >= sel.similarities[:, 1:])


def test_no_eligible_entry_gives_no_selection():
    pool = torch.randn(1, 5, 4)
    assert select_top_k(torch.randn(1, 4), pool, recent_exclude=5, k=6) is None
    assert select_random(1, 5, 5, 6, torch.Generator().manual_seed(0)) is None


def test_batch_samples_select_independently():
    pool = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])
    sel = select_top_k(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), pool, recent_exclude=1, k=1)
    assert sel.pool_indices.tolist() == [[0], [1]]


def test_random_retrieval_is_seeded_distinct_and_eligible():
    a = select_random(2, 20, 5, 6, torch.Generator().manual_seed(7)).pool_indices
    b = select_random(2, 20, 5, 6, torch.Generator().manual_seed(7)).pool_indices
    assert torch.equal(a, b)
    assert a.shape == (2, 6) and int(a.max()) < 15
    assert all(len(set(row)) == 6 for row in a.tolist())
