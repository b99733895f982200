"""Prompts over time: which text conditions each block, and where scene boundaries and hard cuts fall.

A schedule is a list of segments (prompt, first block, cut flag: a hard cut at the segment's start).
One prompt is one segment. Two formats give schedules, for every method:

- ∞-RoPE's one-line syntax (a prompt line holding `|`; ∞-RoPE reads every line with it):

      scene A[3s] | scene B[3s#] | scene C      (`#`: hard cut; no duration: 14 blocks; `;` starts subtitles)

  A segment of N seconds lasts int(N * fps / (vae_stride * frames_per_block)) blocks, at least 1
  (fps 16, VAE stride 4); the last segment runs to the end of the video.
- LongLive's: a JSONL line `{"prompts": [p0, p1, ...]}` with `switch_frame_indices` (latent frames, one
  fewer than prompts) in the config. A switch takes effect at the first block whose first frame is at or
  after its index (the index is rounded up to a block boundary).

A CausalRollout switches prompts at every block whose segment differs from the previous block's.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from utils.config import ConfigError

INFROPE_FPS = 16
INFROPE_VAE_STRIDE = 4
INFROPE_DEFAULT_BLOCKS = 14  # a scene without a duration: 10.5 s
_DURATION = re.compile(r"\[\s*(?:(\d+(?:\.\d+)?)\s*s)?\s*#?\s*\]")


class ScheduleError(ConfigError):
    """A prompt schedule that cannot play as written (the message names the value; callers add the file and line)."""


@dataclass(frozen=True)
class Segment:
    prompt: str
    start_block: int
    cut: bool = False  # a hard cut at the start of this segment


@dataclass(frozen=True)
class Block:
    """One block of the loop with its place in the schedule."""

    index: int
    frames: tuple[int, ...]
    scene: int  # index of the segment that conditions the block
    boundary: bool  # the block starts a new segment (not the first)
    cut: bool  # ... with a hard cut


@dataclass(frozen=True)
class PromptSchedule:
    segments: tuple[Segment, ...]

    def __post_init__(self):
        starts = [s.start_block for s in self.segments]
        if not starts or starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])):
            raise ValueError(f"segment start blocks must begin at 0 and increase, got {starts}")

    @classmethod
    def single(cls, prompt: str) -> "PromptSchedule":
        return cls((Segment(prompt, 0),))

    @property
    def prompts(self) -> list[str]:
        return [s.prompt for s in self.segments]

    def check_length(self, num_frames: int, frames_per_block: int) -> None:
        """Every segment must start inside a video of `num_frames` frames (a segment that never plays is an error)."""
        late = [s for s in self.segments if s.start_block * frames_per_block >= num_frames]
        if late:
            raise ScheduleError(f"segment '{late[0].prompt}' starts at frame {late[0].start_block * frames_per_block}, past the "
                                f"end of the video ({num_frames} latent frames); shorten the schedule or raise num_output_frames")

    def blocks(self, num_frames: int, frames_per_block: int) -> list[Block]:
        """Every block of a video of `num_frames` frames; segments starting after the end never play."""
        out, scene = [], 0
        for index, first in enumerate(range(0, num_frames, frames_per_block)):
            boundary = scene + 1 < len(self.segments) and self.segments[scene + 1].start_block == index
            scene += boundary
            frames = tuple(range(first, first + frames_per_block))
            out.append(Block(index, frames, scene, boundary, boundary and self.segments[scene].cut))
        return out


def parse_infrope_prompt(line: str, frames_per_block: int, cut_from_ending_scene: bool = True) -> PromptSchedule:
    """∞-RoPE's prompt line -> schedule.

    `cut_from_ending_scene` reproduces the official parser: a boundary cuts when the scene that *ends*
    there carries `#` (so `A | B[#] | C` cuts at B -> C). False gives the documented meaning: `#` marks
    a cut at the start of its own scene.
    """
    scenes = [part.split(";")[0] for part in line.split("|")]
    texts, lengths, flags = [], [], []
    for scene in scenes:
        match = _DURATION.search(scene)
        seconds = match.group(1) if match else None
        text = (scene[: match.start()] if match else scene).strip()
        if not text:
            raise ScheduleError(f"empty scene in prompt line '{line}'")
        texts.append(text)
        lengths.append(max(1, int(float(seconds) * INFROPE_FPS / (INFROPE_VAE_STRIDE * frames_per_block))) if seconds else INFROPE_DEFAULT_BLOCKS)
        flags.append("#" in scene)
    segments, start = [], 0
    for i, text in enumerate(texts):
        cut = i > 0 and (flags[i - 1] if cut_from_ending_scene else flags[i])
        segments.append(Segment(text, start, cut))
        start += lengths[i]
    return PromptSchedule(tuple(segments))


def longlive_schedule(prompts: list[str], switch_frame_indices: list[int], frames_per_block: int) -> PromptSchedule:
    """LongLive's segments: prompt i + 1 from the first block starting at or after switch_frame_indices[i]."""
    if len(switch_frame_indices) != len(prompts) - 1:
        raise ScheduleError(f"{len(prompts)} prompts need {len(prompts) - 1} switch_frame_indices, got {len(switch_frame_indices)} "
                            f"({list(switch_frame_indices)}): one switch between consecutive prompts")
    empty = [i for i, p in enumerate(prompts) if not isinstance(p, str) or not p.strip()]
    if empty:
        raise ScheduleError(f"prompt {empty[0]} is empty or not a string: {prompts[empty[0]]!r}")
    starts = [math.ceil(i / frames_per_block) for i in switch_frame_indices]
    for k, index in enumerate(switch_frame_indices):
        if index < 1:
            raise ScheduleError(f"switch_frame_indices[{k}] = {index}: a switch must come after frame 0")
        if k and starts[k] <= starts[k - 1]:
            raise ScheduleError(f"switch_frame_indices {list(switch_frame_indices)} must increase by at least one block of "
                                f"{frames_per_block} frames: {switch_frame_indices[k - 1]} and {index} both switch at frame "
                                f"{starts[k] * frames_per_block}" if starts[k] == starts[k - 1] else
                                f"switch_frame_indices {list(switch_frame_indices)} must increase: {index} after {switch_frame_indices[k - 1]}")
    return PromptSchedule(tuple(Segment(p.strip(), start) for p, start in zip(prompts, [0] + starts)))


def parse_longlive_line(line: str, switch_frame_indices: list[int], frames_per_block: int) -> PromptSchedule:
    """One line of LongLive's JSONL prompt file, `{"prompts": [p0, p1, ...]}` -> schedule."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ScheduleError(f"not a JSON object ({err.msg}): {line[:80]!r}; LongLive's format is {{\"prompts\": [\"...\", ...]}}") from None
    if not isinstance(record, dict) or not isinstance(record.get("prompts"), list):
        raise ScheduleError(f"expected {{\"prompts\": [...]}}, got {line[:80]!r}")
    return longlive_schedule(record["prompts"], switch_frame_indices, frames_per_block)


@dataclass(frozen=True)
class PromptFormat:
    """How a prompt line becomes a schedule: LongLive JSONL when `switch_frame_indices` is set, else the one-line
    syntax for lines holding `|` (every line with `every_line`, as ∞-RoPE's parser), else one prompt.
    `#` marks a hard cut into its own scene unless `cut_from_ending_scene` (∞-RoPE's official reading)."""

    frames_per_block: int
    switch_frame_indices: tuple[int, ...] | None = None
    every_line: bool = False
    cut_from_ending_scene: bool = False

    def parse(self, line: str) -> PromptSchedule:
        if self.switch_frame_indices is not None:
            return parse_longlive_line(line, list(self.switch_frame_indices), self.frames_per_block)
        if self.every_line or "|" in line:
            return parse_infrope_prompt(line, self.frames_per_block, self.cut_from_ending_scene)
        return PromptSchedule.single(line)
