"""Training sequences of the toy generator: the contexts the block loop builds, filled with true frames.

A sequence is `[sink ‖ memory ‖ local ‖ target block]` for one block of a random trajectory, with
the frame indices and RoPE positions of `wan.context_layout.block_layout`, in one of three layouts:

- `native`: sliding window at absolute positions (sink + `window - sink` frames).
- `window`: the same frames at window-relative positions (the ∞-RoPE style cache).
- `memory_window`: the retrieval-memory layout of the pipeline (memory frames at position 0, as
  far back as the trajectory allows), so the model learns to use far-back frames when visible.

Memory frames come from the frames the history bank would hold (evicted and outside the recency
guard); a random number of them are the ones that overlap the last context frame most (what an
oracle would retrieve) and the rest are random, so the model learns to use an old frame when it
shows the place and to ignore it when it does not.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.rollout_config import RolloutConfig
from toydatasets.toy_world import WorldConfig, sample_trajectory, view_overlap, views
from wan.context_layout import block_layout

# layout name -> (memory frames in the context, window-relative RoPE positions)
LAYOUTS = {"native": (False, False), "window": (False, True), "memory_window": (True, True)}


@dataclass
class TrainSequence:
    frames: torch.Tensor  # [B, S, C, H, W] true views: context frames, then the target block
    positions: torch.Tensor  # [S] long, temporal RoPE position of every frame
    groups: torch.Tensor  # [S] long, attention group (a frame sees groups <= its own)
    num_target: int  # the last `num_target` frames are the block to denoise
    layout: str


def bank_eligible(first_frame: int, rollout: RolloutConfig) -> range:
    """Frames the history bank may return for the block starting at `first_frame`.

    When the block starts, the window cache holds the sink and the last `window - sink` frames; older
    frames are banked, and the newest `recent_exclude` of those are not eligible.
    """
    mk = rollout.model_kwargs
    banked_end = first_frame - (mk.local_attn_size - mk.sink_size)
    return range(mk.sink_size, max(mk.sink_size, banked_end - mk.recent_exclude))


def _memory_frames(positions: torch.Tensor, eligible: range, count: int, world: WorldConfig, g: torch.Generator) -> list[int]:
    """`count` distinct frames of `eligible`: a random number of best-overlapping ones, the rest random.

    positions: [F, 2] camera positions of the trajectory; the query is the last frame before the block.
    """
    pool = torch.tensor(list(eligible))
    overlap = view_overlap(positions[pool], positions[-1], world)  # vs the query frame
    best = pool[torch.argsort(overlap + 1e-3 * torch.rand(len(pool), generator=g), descending=True)]
    num_best = int(torch.randint(0, count + 1, (1,), generator=g))
    chosen = best[:num_best].tolist()
    rest = [f for f in pool[torch.randperm(len(pool), generator=g)].tolist() if f not in chosen]
    return chosen + rest[: count - num_best]


def sample_sequence(
    worlds: list[torch.Tensor], world: WorldConfig, rollout: RolloutConfig, batch: int, max_frames: int,
    layout_weights: dict[str, float], loop_fraction: float, g: torch.Generator,
) -> TrainSequence:
    """A batch of `batch` sequences sharing one layout and block index, each from a random world and trajectory.

    layout_weights: sampling weight of every name in LAYOUTS; loop_fraction: share of `loop` trajectories
    (the others are `line`).
    """
    nf = rollout.num_frame_per_block
    weights = torch.tensor([float(layout_weights[name]) for name in LAYOUTS])
    layout = list(LAYOUTS)[int(torch.multinomial(weights, 1, generator=g))]
    with_memory, window_positions = LAYOUTS[layout]
    first = nf * int(torch.randint(1, max_frames // nf, (1,), generator=g))
    eligible = bank_eligible(first, rollout)
    mk = rollout.model_kwargs
    num_memory = min(mk.memory_size, len(eligible)) if with_memory else 0
    lay = block_layout(
        first, nf, mk.local_attn_size, mk.sink_size,
        memory_size=mk.memory_size if with_memory else 0, num_retrieved=num_memory,
        window_positions=window_positions,
    )
    samples = []
    for _ in range(batch):
        w = worlds[int(torch.randint(0, len(worlds), (1,), generator=g))]
        kind = "loop" if torch.rand(1, generator=g).item() < loop_fraction else "line"
        pos = sample_trajectory(world, kind, g).positions(world, first + nf)
        memory = _memory_frames(pos[:first], eligible, num_memory, world, g) if num_memory else []
        index = list(lay.sink_frames) + memory + list(lay.local_frames) + list(lay.current_frames)
        samples.append(views(w, pos[index], world.view))
    positions = lay.sink_positions + (lay.retrieved_position,) * num_memory + lay.local_positions + lay.current_positions
    # groups: the sink, each memory frame alone, the local frames by the block they were generated in, the target
    groups = [0] * len(lay.sink_frames) + list(range(1, num_memory + 1))
    groups += [num_memory + 1 + f // nf for f in lay.local_frames]
    groups += [num_memory + 1 + first // nf] * nf
    return TrainSequence(torch.stack(samples), torch.tensor(positions), torch.tensor(groups), nf, layout)
