"""VBench-Long's clip protocol: fixed 2-second clips per video, and clip scores grouped back to videos.

A video of T frames at `fps` is cut into floor(T / L) clips of L = fps * seconds frames; a shorter
remainder becomes one more clip of L frames that borrows the frames before it (SPEC_NEXT §3.1).
A video shorter than one clip is one clip of all its frames. VBench groups clip files back into
videos by the part of their name before the first `_`, so video names must not contain one.
"""
from __future__ import annotations

import re
from collections import defaultdict
from statistics import fmean

_SAFE_NAME = re.compile(r"[A-Za-z0-9-]+")


class ClipNameError(ValueError):
    """A video name that VBench would mis-group."""


def clip_ranges(num_frames: int, fps: float, seconds: float) -> list[tuple[int, int]]:
    """[start, end) frame ranges of the clips of a video."""
    length = int(round(fps * seconds))
    if num_frames < 1 or length < 1:
        raise ValueError(f"need >= 1 frame and a clip of >= 1 frame, got {num_frames} frames, clip {length}")
    if num_frames < length:
        return [(0, num_frames)]
    full = num_frames // length
    ranges = [(i * length, (i + 1) * length) for i in range(full)]
    if num_frames % length:
        ranges.append((num_frames - length, num_frames))
    return ranges


def check_video_name(name: str) -> str:
    """`name` if VBench groups its clips back correctly: letters, digits and `-` only, no `-Scene`."""
    if not _SAFE_NAME.fullmatch(name) or "-Scene" in name:
        raise ClipNameError(f"video name '{name}' would be mis-grouped by VBench-Long (it groups clips by the name "
                            "before the first '_' and strips '-Scene...'); use letters, digits and '-' only, "
                            "e.g. the inference stems '0000-0'")
    return name


def video_of_clip(clip: str) -> str:
    """The video a clip file stem belongs to (VBench's rule: the part before the first `_`)."""
    return clip.split("_", 1)[0]


def group_clip_scores(clip_scores: dict[str, float]) -> dict[str, list[float]]:
    """{clip stem: score} -> {video: scores in clip order}."""
    grouped: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for clip, score in clip_scores.items():
        grouped[video_of_clip(clip)].append((clip, score))
    return {video: [score for _, score in sorted(items)] for video, items in grouped.items()}


def video_means(clip_scores: dict[str, float]) -> dict[str, float]:
    """Per-video score = mean of its clips' scores."""
    return {video: fmean(scores) for video, scores in group_clip_scores(clip_scores).items()}
