"""Prompts over time: which text conditions each block, and where scene boundaries and hard cuts fall.

A schedule is a list of segments (prompt, first block, cut flag: a hard cut at the segment's start).
One prompt is one segment. ∞-RoPE's one-line syntax is parsed here:

    scene A[3s] | scene B[3s#] | scene C      (`#`: hard cut; no duration: 14 blocks; `;` starts subtitles)

A segment of N seconds lasts int(N * fps / (vae_stride * frames_per_block)) blocks, at least 1
(fps 16, VAE stride 4); the last segment runs to the end of the video.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

INFROPE_FPS = 16
INFROPE_VAE_STRIDE = 4
INFROPE_DEFAULT_BLOCKS = 14  # a scene without a duration: 10.5 s
_DURATION = re.compile(r"\[\s*(?:(\d+(?:\.\d+)?)\s*s)?\s*#?\s*\]")


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
            raise ValueError(f"empty scene in prompt line '{line}'")
        texts.append(text)
        lengths.append(max(1, int(float(seconds) * INFROPE_FPS / (INFROPE_VAE_STRIDE * frames_per_block))) if seconds else INFROPE_DEFAULT_BLOCKS)
        flags.append("#" in scene)
    segments, start = [], 0
    for i, text in enumerate(texts):
        cut = i > 0 and (flags[i - 1] if cut_from_ending_scene else flags[i])
        segments.append(Segment(text, start, cut))
        start += lengths[i]
    return PromptSchedule(tuple(segments))
