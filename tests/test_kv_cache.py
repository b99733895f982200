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


def write_block(cache: FrameKVCache, frames: tuple[int, ...]) -> None:
    for layer in range(LAYERS):
        cache.write(layer, frames, *frame_kv(layer, frames))


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
        displaced = cache.displaced_by(frames)
        # the frames overwritten are exactly the ones the reference dropped (native) or banked (latentmem),
        # oldest first, and never a sink frame
        assert displaced == sorted(set(held) - set(expected_held))
        if rollout.startswith("latentmem"):
            assert expected_pool == pool + displaced
        assert all(f >= sink_size for f in displaced)
        write_block(cache, frames)
        held, pool = expected_held, expected_pool
        for layer in range(LAYERS):
            k, v = cache.read(layer, held)
            expected_k, expected_v = frame_kv(layer, tuple(held))
            assert torch.equal(k, expected_k) and torch.equal(v, expected_v)
        for gone in set(range(frames[-1] + 1)) - set(held):
            with pytest.raises(KeyError, match=f"frame {gone} is not in the window cache"):
                cache.read(0, [gone])
    assert held[:sink_size] == list(range(sink_size))


def test_sink_survives_long_rollouts_and_ring_keeps_the_newest_frames():
    cache = tiny_cache(sink_size=2, window=7)
    for first in range(0, 60, 3):
        write_block(cache, (first, first + 1, first + 2))
    k, _ = cache.read(1, [0, 1, 55, 56, 57, 58, 59])
    assert k[0, :, 0, 0].tolist() == [1000.0, 1001.0, 1055.0, 1056.0, 1057.0, 1058.0, 1059.0]
    assert cache.displaced_by((60, 61, 62)) == [55, 56, 57]


def test_read_all_layers_returns_every_layer_of_the_requested_frames():
    cache = tiny_cache(sink_size=1)
    for first in range(0, 15, 3):
        write_block(cache, (first, first + 1, first + 2))
    k, v = cache.read_all_layers([7, 4])
    assert k.shape == (LAYERS, 1, 2, 1, 1, HEAD_DIM)
    assert k[:, 0, :, 0, 0, 0].tolist() == [[7.0, 4.0], [1007.0, 1004.0]]
    assert torch.equal(v, -k)


def test_reading_a_frame_never_written_raises():
    cache = tiny_cache(sink_size=1)
    write_block(cache, (0, 1, 2))
    with pytest.raises(KeyError, match=r"frame 3 is not in the window cache \(slot 3 holds None\)"):
        cache.read(0, [0, 3])


def test_frames_become_readable_once_the_last_layer_is_written():
    """A block's K/V are written layer by layer within one call; the frame counts as cached after the last layer."""
    cache = tiny_cache(sink_size=1)
    cache.write(0, (0, 1, 2), *frame_kv(0, (0, 1, 2)))
    with pytest.raises(KeyError):
        cache.read(0, [0])
    cache.write(1, (0, 1, 2), *frame_kv(1, (0, 1, 2)))
    assert cache.read(0, [2])[0][0, 0, 0, 0].item() == 2.0


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
