"""FrameKVCache slot bookkeeping against the cache contents the reference rollouts measured."""
import json

import pytest
import torch

from conftest import FIXTURES
from wan.geometry import LatentGeometry
from wan.kv_cache import FrameKVCache
from wan.model_config import model_preset

WINDOW, LAYERS, HEAD_DIM = 12, 2, 2


def frame_kv(layer: int, frames: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """k, v: [B=1, len(frames) * T, n=1, d] with T = 1 token per frame; values identify (layer, frame)."""
    k = torch.tensor([[float(1000 * layer + f)] * HEAD_DIM for f in frames]).view(1, len(frames), 1, HEAD_DIM)
    return k, -k


def tiny_cache(sink_size: int, window: int = WINDOW) -> FrameKVCache:
    return FrameKVCache(LAYERS, 1, window, sink_size, 1, 1, HEAD_DIM, "cpu", torch.float32)


def write_block(cache: FrameKVCache, frames: tuple[int, ...]) -> list[int]:
    """Admit a block and write it; -> the frames it evicted."""
    evicted = [cache.frame_at(s) for s in cache.overflow(len(frames))]
    slots = cache.admit(frames)
    for layer in range(LAYERS):
        cache.write(layer, slots, *frame_kv(layer, frames))
    return evicted


def cache_after_each_block(rollout: str) -> list[tuple[tuple[int, ...], list[int], list[int]]]:
    """(block frames, frames in the cache, frames in the pool) after each block's recache call."""
    calls = json.loads((FIXTURES / f"attn_layout_{rollout}.json").read_text())["calls"]
    return [
        (tuple(q[0] for q in c["queries"]), c["cache_frames_after"], c["pool_frames_after"])
        for c in calls
        if c["role"] == "recache"
    ]


@pytest.mark.parametrize("rollout, sink_size", [("native_sink1", 1), ("native_sink3", 3), ("latentmem_ae", 1)])
def test_cache_holds_the_measured_frames_after_every_block(rollout, sink_size):
    cache = tiny_cache(sink_size)
    held, pool = [], []
    for frames, expected_held, expected_pool in cache_after_each_block(rollout):
        evicted = write_block(cache, frames)
        # the frames evicted are exactly the ones the reference dropped (native) or banked (latentmem),
        # oldest first, and never a sink frame
        assert evicted == sorted(set(held) - set(expected_held))
        if rollout.startswith("latentmem"):
            assert expected_pool == pool + evicted
        assert all(f >= sink_size for f in evicted)
        held, pool = expected_held, expected_pool
        assert sorted(cache.frames) == sorted(held)
        for layer in range(LAYERS):
            k, v = cache.read(layer, cache.slots_of(held))
            expected_k, expected_v = frame_kv(layer, tuple(held))
            assert torch.equal(k, expected_k) and torch.equal(v, expected_v)
        for gone in set(range(frames[-1] + 1)) - set(held):
            with pytest.raises(KeyError, match=f"frame {gone} is not in the window cache"):
                cache.slots_of([gone])
    assert held[:sink_size] == list(range(sink_size))


def test_sink_survives_long_rollouts_and_logical_order_is_oldest_first():
    cache = tiny_cache(sink_size=2, window=7)
    for first in range(0, 60, 3):
        write_block(cache, (first, first + 1, first + 2))
    assert cache.frames == [0, 1, 55, 56, 57, 58, 59]
    k, _ = cache.read(1, list(range(7)))
    assert k[0, :, 0, 0].tolist() == [1000.0, 1001.0, 1055.0, 1056.0, 1057.0, 1058.0, 1059.0]
    assert [cache.frame_at(s) for s in cache.overflow(3)] == [55, 56, 57]


def test_read_all_layers_returns_every_layer_of_the_requested_slots():
    cache = tiny_cache(sink_size=1)
    for first in range(0, 15, 3):
        write_block(cache, (first, first + 1, first + 2))
    k, v = cache.read_all_layers(cache.slots_of([7, 4]))
    assert k.shape == (LAYERS, 1, 2, 1, 1, HEAD_DIM)
    assert k[:, 0, :, 0, 0, 0].tolist() == [[7.0, 4.0], [1007.0, 1004.0]]
    assert torch.equal(v, -k)


def test_copy_and_truncate_keep_stale_slots_readable_like_the_official_flush():
    cache = tiny_cache(sink_size=1, window=6)
    for first in range(0, 9, 3):
        write_block(cache, (first, first + 1, first + 2))
    assert cache.frames == [0, 4, 5, 6, 7, 8]
    cache.copy([4, 5], [1, 2])  # the last two slots into slots 1, 2
    cache.truncate(3)
    assert cache.frames == [0, 7, 8]
    assert cache.read(0, [0, 1, 2])[0][0, :, 0, 0].tolist() == [0.0, 7.0, 8.0]
    # slots past the valid length keep their data until the next block overwrites them
    assert cache.read(0, [3, 4, 5])[0][0, :, 0, 0].tolist() == [6.0, 7.0, 8.0]
    write_block(cache, (9, 10, 11))
    assert cache.frames == [0, 7, 8, 9, 10, 11]
    assert cache.read(1, list(range(6)))[0][0, :, 0, 0].tolist() == [1000.0, 1007.0, 1008.0, 1009.0, 1010.0, 1011.0]


def test_never_written_slots_read_as_zeros_and_a_block_larger_than_the_window_raises():
    cache = tiny_cache(sink_size=1, window=6)
    write_block(cache, (0, 1, 2))
    assert cache.frame_at(5) is None and cache.read(0, [5])[0].abs().sum() == 0
    with pytest.raises(ValueError, match="7 frames do not fit a window of 6 with a sink of 1"):
        cache.overflow(7)


@pytest.mark.parametrize("sink_size", [-1, 12, 13])
def test_sink_must_leave_room_in_the_window(sink_size):
    with pytest.raises(ValueError, match=f"sink_size {sink_size} must be in \\[0, window 12\\)"):
        tiny_cache(sink_size)


def test_nbytes_counts_keys_and_values_full_size_on_meta():
    cfg = model_preset("wan2.1-t2v-1.3b")
    tokens = LatentGeometry.of(cfg, 60, 104).tokens_per_frame
    cache = FrameKVCache(cfg.num_layers, 1, WINDOW, 1, tokens, cfg.num_heads, cfg.head_dim, "meta", torch.bfloat16)
    assert cache.nbytes() == 2 * 30 * 1 * 12 * 1560 * 12 * 128 * 2 == 3_450_470_400
    assert tiny_cache(1).nbytes() == 2 * LAYERS * WINDOW * HEAD_DIM * 4
