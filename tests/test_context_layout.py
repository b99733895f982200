"""block_layout against the measured attention layout of every call of the reference rollouts."""
import json

import pytest

from conftest import FIXTURES
from wan.context_layout import block_layout

# rollout -> (sink_size, memory_size, recent_exclude, window-relative RoPE); window 12, 3 frames per block
ROLLOUTS = {
    "native_sink1": (1, 0, 0, False),
    "native_sink3": (3, 0, 0, False),
    "latentmem_ae": (1, 6, 5, True),
}
WINDOW = 12


def load_layout(rollout: str) -> list[dict]:
    return json.loads((FIXTURES / f"attn_layout_{rollout}.json").read_text())["calls"]


def pool_before_each_block(calls: list[dict]) -> dict[int, list[int]]:
    """Frames in the history pool when each block's retrieval decision is taken (= after the previous block)."""
    pools, pool = {}, []
    for call in calls:
        pools.setdefault(call["block"], pool)
        pool = call["pool_frames_after"]
    return pools


@pytest.mark.parametrize("rollout", list(ROLLOUTS))
def test_block_layout_reproduces_every_measured_call(rollout):
    sink_size, memory_size, recent_exclude, window_positions = ROLLOUTS[rollout]
    calls = load_layout(rollout)
    pool_before = pool_before_each_block(calls)
    retrieving_calls = 0
    for call in calls:
        first, num_frames = call["queries"][0][0], len(call["queries"])
        # the retrieval count follows from the pool alone: top-K of the entries outside the recent R
        eligible = pool_before[call["block"]][: max(0, len(pool_before[call["block"]]) - recent_exclude)]
        num_retrieved = min(memory_size, len(eligible))
        layout = block_layout(first, num_frames, WINDOW, sink_size, memory_size, num_retrieved, window_positions)
        where = f"{rollout} call {call['call']}"

        assert [list(q) for q in zip(layout.current_frames, layout.current_positions)] == call["queries"], where

        keys = call["keys"]
        retrieved = keys[len(layout.sink_frames) : len(layout.sink_frames) + num_retrieved]
        assert len(retrieved) == num_retrieved, where
        # retrieved identities come from the measurement: distinct eligible pool frames, all at position 0
        assert len({frame for frame, _, _ in retrieved}) == num_retrieved, where
        for frame, position, kind in retrieved:
            assert position == layout.retrieved_position == 0 and kind == "cached" and frame in eligible, where
        expected = (
            [[f, p, "cached"] for f, p in zip(layout.sink_frames, layout.sink_positions)]
            + retrieved
            + [[f, p, "cached"] for f, p in zip(layout.local_frames, layout.local_positions)]
            + [[f, p, "current"] for f, p in zip(layout.current_frames, layout.current_positions)]
        )
        assert keys == expected, where
        assert list(layout.context_positions) == [k[1] for k in keys[: layout.num_context_frames]], where
        retrieving_calls += num_retrieved > 0
    if memory_size:
        assert retrieving_calls == 5 * 14  # blocks 6..19, four denoising calls and the recache each


def test_native_sink1_steady_state_by_hand():
    layout = block_layout(12, 3, WINDOW, sink_size=1, memory_size=0, num_retrieved=0, window_positions=False)
    assert layout.sink_frames == (0,) and layout.sink_positions == (0,)
    assert layout.local_frames == tuple(range(4, 12)) and layout.local_positions == tuple(range(4, 12))
    assert layout.current_positions == (12, 13, 14)


def test_latentmem_positions_are_window_slots_and_retrieved_sit_at_zero():
    layout = block_layout(36, 3, WINDOW, sink_size=1, memory_size=6, num_retrieved=6, window_positions=True)
    assert layout.sink_frames == (0,) and layout.local_frames == (34, 35)
    assert layout.context_positions == (0, 0, 0, 0, 0, 0, 0, 7, 8)
    assert layout.current_positions == (9, 10, 11)
    assert layout.num_context_frames == 9


def test_latentmem_local_window_is_five_frames_before_anything_is_retrieved():
    layout = block_layout(6, 3, WINDOW, sink_size=1, memory_size=6, num_retrieved=0, window_positions=True)
    assert layout.local_frames == (4, 5) and layout.local_positions == (4, 5)
    assert layout.current_positions == (6, 7, 8)


def test_window_too_small_for_a_block_raises():
    with pytest.raises(ValueError, match="leaves 2 local frames, fewer than the 3 frames"):
        block_layout(0, 3, window=9, sink_size=1, memory_size=6, num_retrieved=0, window_positions=True)


def test_more_retrieved_than_memory_size_raises():
    with pytest.raises(ValueError, match="7 retrieved frames exceed memory_size 6"):
        block_layout(30, 3, WINDOW, sink_size=1, memory_size=6, num_retrieved=7, window_positions=True)
