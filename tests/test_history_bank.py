import torch

from pipeline.history_bank import HistoryBank


def make_bank(capacity=2, batch=2, dtype=torch.float32):
    return HistoryBank(num_layers=3, batch=batch, tokens_per_frame=4, num_heads=2, head_dim=6, capacity=capacity,
                       storage_device="cpu", storage_dtype=dtype, compute_device="cpu")


def frame_kv(frames, batch=2, value_offset=0.0):
    """k/v of shape [L, B, m, T, n, d] whose values encode (layer, sample, frame)."""
    l_idx = torch.arange(3).view(3, 1, 1, 1, 1, 1)
    b_idx = torch.arange(batch).view(1, batch, 1, 1, 1, 1)
    f_idx = torch.tensor(frames, dtype=torch.float32).view(1, 1, -1, 1, 1, 1)
    k = (100 * l_idx + 10 * b_idx + f_idx).float().expand(3, batch, len(frames), 4, 2, 6).clone()
    return k, -k + value_offset


def test_bank_keeps_eviction_order_and_grows():
    bank = make_bank(capacity=2)
    for frames in ([1, 2, 3], [4, 5, 6], [7, 8, 9]):
        k, v = frame_kv(frames)
        bank.add(frames, k, v, torch.randn(2, 3, 5))
    assert bank.frames == list(range(1, 10))
    assert bank.capacity >= 9 and bank.size == 9
    got = bank.gather(torch.tensor([[0, 8], [4, 2]]), torch.float32)
    # sample 0 asked pool entries 0, 8 (frames 1, 9); sample 1 entries 4, 2 (frames 5, 3)
    assert got.k.shape == (3, 2, 2, 4, 2, 6)
    assert got.k[1, 0, :, 0, 0, 0].tolist() == [101.0, 109.0]
    assert got.k[2, 1, :, 0, 0, 0].tolist() == [215.0, 213.0]
    assert torch.equal(got.v, -got.k)


def test_bank_copies_frames_instead_of_aliasing_the_cache():
    bank = make_bank()
    k, v = frame_kv([1])
    bank.add([1], k, v, torch.zeros(2, 1, 5))
    k.fill_(0.0)  # the window cache slot is reused by a later frame
    assert bank.gather(torch.tensor([[0], [0]]), torch.float32).k[0, 0, 0, 0, 0, 0].item() == 1.0


def test_bank_descriptors_follow_entries_through_growth():
    bank = make_bank(capacity=1)
    descs = torch.randn(2, 4, 5)
    for i in range(4):
        k, v = frame_kv([i + 1])
        bank.add([i + 1], k, v, descs[:, i : i + 1])
    assert torch.equal(bank.descriptors[:, : bank.size], descs)


def test_bank_storage_dtype_and_bytes_per_frame():
    bank = make_bank(dtype=torch.bfloat16)
    k, v = frame_kv([1])
    bank.add([1], k, v, None)
    assert bank.kv.dtype == torch.bfloat16
    # 2 (k, v) x 3 layers x 2 samples x 4 tokens x 2 heads x 6 dims x 2 bytes
    assert bank.bytes_per_frame() == 2 * 3 * 2 * 4 * 2 * 6 * 2
    assert bank.gather(torch.tensor([[0], [0]]), torch.float32).k.dtype == torch.float32


def test_gathers_are_counted():
    bank = make_bank()
    k, v = frame_kv([1, 2])
    bank.add([1, 2], k, v, None)
    bank.gather(torch.tensor([[0], [1]]), torch.float32)
    bank.gather(torch.tensor([[1], [1]]), torch.float32)
    assert bank.num_gathers == 2
