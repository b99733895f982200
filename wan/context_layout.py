"""Which earlier frames a block attends, in what order, at which RoPE temporal positions.

    attended keys = [ sink ‖ retrieved ‖ local ‖ current ]

- sink: the first `sink_size` frames of the video, kept forever.
- retrieved: frames brought back from the history bank (retrieval memory only).
- local: the most recent frames before the block; with the current block they fill
  `local_span` frames, where local_span = window - sink - memory_size.
- current: the frames being generated.

RoPE temporal positions follow the reference: `absolute` gives every frame its own index;
`window` gives cached frames their slot in the window cache (the current block sits at the
last slots once the cache is full) and every retrieved frame position 0.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ContextLayout:
    sink_frames: tuple[int, ...]
    local_frames: tuple[int, ...]
    current_frames: tuple[int, ...]
    num_retrieved: int
    sink_positions: tuple[int, ...]
    retrieved_position: int
    local_positions: tuple[int, ...]
    current_positions: tuple[int, ...]

    @property
    def context_positions(self) -> tuple[int, ...]:
        """Temporal position of every context frame in concatenation order (sink, retrieved, local)."""
        return self.sink_positions + (self.retrieved_position,) * self.num_retrieved + self.local_positions

    @property
    def num_context_frames(self) -> int:
        return len(self.sink_frames) + self.num_retrieved + len(self.local_frames)


def block_layout(
    first_frame: int,
    num_frames: int,
    window: int,
    sink_size: int,
    memory_size: int,
    num_retrieved: int,
    window_positions: bool,
) -> ContextLayout:
    """Layout of the block covering frames [first_frame, first_frame + num_frames).

    `memory_size` frames of the window are reserved for retrieved entries (0 for the plain
    sliding window); `num_retrieved` <= memory_size of them are filled for this block.
    """
    end = first_frame + num_frames
    local_span = window - sink_size - memory_size
    if local_span < num_frames:
        raise ValueError(
            f"window {window} - sink {sink_size} - memory {memory_size} leaves {local_span} local frames, "
            f"fewer than the {num_frames} frames of a block"
        )
    if num_retrieved > memory_size:
        raise ValueError(f"{num_retrieved} retrieved frames exceed memory_size {memory_size}")
    sink = tuple(range(min(sink_size, first_frame)))
    local = tuple(range(max(sink_size, end - local_span), first_frame))
    current = tuple(range(first_frame, end))

    if window_positions:
        shift = max(0, end - window)

        def position(f: int) -> int:
            return f if f < sink_size else f - shift
    else:
        def position(f: int) -> int:
            return f

    return ContextLayout(
        sink_frames=sink,
        local_frames=local,
        current_frames=current,
        num_retrieved=num_retrieved,
        sink_positions=tuple(position(f) for f in sink),
        retrieved_position=0,
        local_positions=tuple(position(f) for f in local),
        current_positions=tuple(position(f) for f in current),
    )
