import pytest
import torch

from pipeline.bank_eviction import OldestEviction, RedundantEviction, StrideEviction
from pipeline.bank_storage import DiskTier, MemoryTier
from pipeline.history_bank import HistoryBank, build_history_bank, frame_bytes
from pipeline.rollout_config import ModelKwargs
from utils.config import ConfigError


def make_bank(batch=2, dtype=torch.float32, tier=None, max_frames=None, eviction=None, guard=0):
    return HistoryBank(num_layers=3, batch=batch, tokens_per_frame=4, num_heads=2, head_dim=6,
                       tier=tier or MemoryTier("cpu"), storage_dtype=dtype, compute_device="cpu",
                       max_frames=max_frames, eviction=eviction, recent_guard=guard)


def frame_kv(frames, batch=2, value_offset=0.0):
    """k/v of shape [L, B, m, T, n, d] whose values encode (layer, sample, frame)."""
    l_idx = torch.arange(3).view(3, 1, 1, 1, 1, 1)
    b_idx = torch.arange(batch).view(1, batch, 1, 1, 1, 1)
    f_idx = torch.tensor(frames, dtype=torch.float32).view(1, 1, -1, 1, 1, 1)
    k = (100 * l_idx + 10 * b_idx + f_idx).float().expand(3, batch, len(frames), 4, 2, 6).clone()
    return k, -k + value_offset


def test_bank_keeps_eviction_order_and_grows():
    bank = make_bank()
    bank.storage.chunk_slots = 2  # several chunks: slots of one gather come from different allocations
    for frames in ([1, 2, 3], [4, 5, 6], [7, 8, 9]):
        k, v = frame_kv(frames)
        bank.add(frames, k, v, torch.randn(2, 3, 5))
    assert bank.frames == list(range(1, 10))
    assert bank.storage.capacity == 10 and bank.size == 9
    got = bank.gather(torch.tensor([[0, 8], [4, 2]]), torch.float32)
    # sample 0 asked pool entries 0, 8 (frames 1, 9); sample 1 entries 4, 2 (frames 5, 3)
    assert got.k.shape == (3, 2, 2, 4, 2, 6)
    assert got.k[1, 0, :, 0, 0, 0].tolist() == [101.0, 109.0]
    assert got.k[2, 1, :, 0, 0, 0].tolist() == [215.0, 213.0]
    assert torch.equal(got.v, -got.k)
    assert got.k.is_contiguous() or got.k[0].flatten(1, 2).shape == (2, 8, 2, 6)


def test_bank_copies_frames_instead_of_aliasing_the_cache():
    bank = make_bank()
    k, v = frame_kv([1])
    bank.add([1], k, v, torch.zeros(2, 1, 5))
    k.fill_(0.0)  # the window cache slot is reused by a later frame
    assert bank.gather(torch.tensor([[0], [0]]), torch.float32).k[0, 0, 0, 0, 0, 0].item() == 1.0


def test_bank_descriptors_follow_entries_through_growth():
    bank = make_bank()
    descs = torch.randn(2, 40, 5)
    for i in range(40):
        k, v = frame_kv([i + 1])
        bank.add([i + 1], k, v, descs[:, i : i + 1])
    assert torch.equal(bank.descriptors, descs)


def test_bank_storage_dtype_and_bytes_per_frame():
    bank = make_bank(dtype=torch.bfloat16)
    k, v = frame_kv([1])
    bank.add([1], k, v, None)
    # 2 (k, v) x 3 layers x 2 samples x 4 tokens x 2 heads x 6 dims x 2 bytes
    assert bank.bytes_per_frame() == 2 * 3 * 2 * 4 * 2 * 6 * 2
    assert bank.storage.slab_bytes == bank.bytes_per_frame()
    assert bank.gather(torch.tensor([[0], [0]]), torch.float32).k.dtype == torch.float32
    # float8: half of bf16 plus one float32 scale per (sample, layer, k|v, head)
    assert frame_bytes(3, 2, 4, 2, 6, torch.float8_e4m3fn) == 2 * 3 * 2 * 4 * 2 * 6 + 2 * 3 * 2 * 2 * 4


def test_gathers_are_counted():
    bank = make_bank()
    k, v = frame_kv([1, 2])
    bank.add([1, 2], k, v, None)
    bank.gather(torch.tensor([[0], [1]]), torch.float32)
    bank.gather(torch.tensor([[1], [1]]), torch.float32)
    assert bank.num_gathers == 2


def test_storage_grows_with_the_video_not_preallocated():
    bank = make_bank()
    bank.storage.chunk_slots = 4
    assert bank.nbytes() == 0
    k, v = frame_kv([1])
    bank.add([1], k, v, None)
    assert bank.nbytes() == 4 * bank.bytes_per_frame()
    k, v = frame_kv([2, 3, 4, 5])
    bank.add([2, 3, 4, 5], k, v, None)
    assert bank.nbytes() == 8 * bank.bytes_per_frame()


def test_budget_holds_and_evicted_slots_are_reused():
    bank = make_bank(max_frames=4, eviction=OldestEviction(), guard=2)
    evicted = []
    for f in range(1, 11):
        k, v = frame_kv([f])
        evicted += bank.add([f], k, v, torch.randn(2, 1, 5))
        assert bank.size <= 4 and bank.storage.capacity <= 4
    assert evicted == [1, 2, 3, 4, 5, 6]
    assert bank.frames == [7, 8, 9, 10]
    got = bank.gather(torch.tensor([[0, 3], [1, 2]]), torch.float32)
    assert got.k[0, 0, :, 0, 0, 0].tolist() == [7.0, 10.0]
    assert got.k[0, 1, :, 0, 0, 0].tolist() == [18.0, 19.0]


def test_recency_guard_entries_are_never_evicted():
    # the two newest entries are near-duplicates, but they are inside the guard of 2
    bank = make_bank(batch=1, max_frames=3, eviction=RedundantEviction(), guard=2)
    descs = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0.1, 1.0]]).unsqueeze(0)
    evicted = []
    for f in range(4):
        k, v = frame_kv([f + 1], batch=1)
        evicted += bank.add([f + 1], k, v, descs[:, f : f + 1])
    # candidates are entries 1 and 2 only; entry 2 ([0, 1, 0]) is the more similar to a kept entry
    assert evicted == [2]
    assert bank.frames == [1, 3, 4]
    assert torch.equal(bank.descriptors, descs[:, [0, 2, 3]])


def test_new_entry_may_leave_at_once_without_a_guard():
    bank = make_bank(batch=1, max_frames=2, eviction=StrideEviction(), guard=0)
    evicted = []
    for f in (2, 4, 3):
        k, v = frame_kv([f], batch=1)
        evicted += bank.add([f], k, v, None)
    # frame 3 is the least aligned to a stride: it leaves on arrival and overwrites no slot
    assert evicted == [3] and bank.frames == [2, 4]
    assert bank.gather(torch.tensor([[0, 1]]), torch.float32).k[0, 0, :, 0, 0, 0].tolist() == [2.0, 4.0]


def test_fp8_bank_dequantises_within_e4m3_precision():
    bank = make_bank(dtype=torch.float8_e4m3fn)
    g = torch.Generator().manual_seed(0)
    k = torch.randn(3, 2, 2, 4, 2, 6, generator=g) * torch.tensor([1e-3, 1.0, 50.0]).view(3, 1, 1, 1, 1, 1)
    v = torch.randn(3, 2, 2, 4, 2, 6, generator=g)
    bank.add([1, 2], k, v, None)
    got = bank.gather(torch.tensor([[0, 1], [1, 0]]), torch.float32)
    expected_k = torch.stack([k[:, 0, [0, 1]], k[:, 1, [1, 0]]], dim=1)
    # e4m3 keeps 3 mantissa bits: relative error <= 2^-4 of each head's largest magnitude
    amax = expected_k.abs().amax(dim=(3, 5), keepdim=True)
    assert ((got.k - expected_k).abs() <= amax * 2**-4).all()
    assert (got.k - expected_k).abs().max() > 0  # really stored in 8 bits
    assert got.v.shape == (3, 2, 2, 4, 2, 6)


def test_disk_tier_gives_the_same_entries_as_memory(tmp_path):
    disk = make_bank(tier=DiskTier(tmp_path, planned_bytes=10**6))
    mem = make_bank()
    for frames in ([1, 2], [3, 4], [5]):
        k, v = frame_kv(frames)
        disk.add(frames, k, v, None)
        mem.add(frames, k, v, None)
    idx = torch.tensor([[4, 0], [2, 3]])
    assert torch.equal(disk.gather(idx, torch.float32).k, mem.gather(idx, torch.float32).k)
    assert list(tmp_path.iterdir()) == []  # the file is unlinked at once: nothing to leave behind
    disk.close()


def test_prefetched_gather_equals_plain_gather(tmp_path):
    for tier in (MemoryTier("cpu"), DiskTier(tmp_path, planned_bytes=10**6)):
        bank = make_bank(tier=tier)
        k, v = frame_kv([1, 2, 3])
        bank.add([1, 2, 3], k, v, None)
        idx = torch.tensor([[2, 0], [1, 1]])
        assert torch.equal(bank.gather_async(idx, torch.float32).result().k, bank.gather(idx, torch.float32).k)
        bank.close()


def test_nothing_changes_the_bank_while_a_gather_is_pending():
    """The reader thread reads slots, storage and output buffers without a lock: the bank refuses changes
    and other gathers until the pending gather's result() is taken."""
    bank = make_bank()
    k, v = frame_kv([1, 2, 3])
    bank.add([1, 2, 3], k, v, None)
    idx = torch.tensor([[2, 0], [1, 1]])
    pending = bank.gather_async(idx, torch.float32)
    k4, v4 = frame_kv([4])
    with pytest.raises(RuntimeError, match="HistoryBank.add while a gather is pending"):
        bank.add([4], k4, v4, None)
    for call in (lambda: bank.gather(idx, torch.float32), lambda: bank.gather_async(idx, torch.float32),
                 lambda: bank.replace(0, k[:, :, 0], v[:, :, 0]), lambda: bank.drop_segments_before(1)):
        with pytest.raises(RuntimeError, match="while a gather is pending"):
            call()
    assert pending.result().k[0, 0, :, 0, 0, 0].tolist() == [3.0, 1.0]
    bank.add([4], k4, v4, None)  # free again
    assert bank.frames == [1, 2, 3, 4]
    bank.close()


def test_a_gather_started_in_inference_mode_writes_the_buffers_made_there():
    bank = make_bank()
    k, v = frame_kv([1, 2, 3])
    bank.add([1, 2, 3], k, v, None)
    idx = torch.tensor([[2, 0], [1, 1]])
    with torch.inference_mode():
        plain = [bank.gather(idx, torch.float32).k.clone() for _ in range(2)]  # both output buffers made here
        prefetched = bank.gather_async(idx, torch.float32).result().k  # written in place on the reader thread
    assert torch.equal(prefetched, plain[0]) and torch.equal(plain[0], plain[1])
    bank.close()


def test_build_history_bank_sizes_the_budget_in_frames():
    # one frame: 2 x 3 layers x 4 tokens x 2 heads x 6 dims x 4 bytes = 1152 bytes per sample
    cfg = ModelKwargs(memory_device="cpu", memory_budget_gb=20.5 * 1152 / 1e9)
    bank, choice = build_history_bank(cfg, 3, 1, 4, 2, 6, 100, torch.device("cpu"), torch.float32)
    assert bank.max_frames == 20 and bank.bytes_per_frame() == 1152
    assert "budget 20 frames" in choice and "host" in choice
    bank, _ = build_history_bank(cfg, 3, 2, 4, 2, 6, 100, torch.device("cpu"), torch.float32)
    assert bank.max_frames == 10


def test_budget_below_the_recency_guard_is_a_config_error():
    cfg = ModelKwargs(memory_budget_gb=5.5 * 1152 / 1e9, recent_exclude=5)
    with pytest.raises(ConfigError, match="recent_exclude 5"):
        build_history_bank(cfg, 3, 1, 4, 2, 6, 100, torch.device("cpu"), torch.float32)
