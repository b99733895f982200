"""mp4 output: frames streamed chunk by chunk from the VAE into imageio's ffmpeg writer.

The file appears under its final name only once it is complete (utils.atomic), so a killed run
never leaves a truncated video that `skip_existing` would take for a finished one.
"""
from __future__ import annotations

import os
from typing import Iterable

import imageio.v2 as imageio
import numpy as np
import torch

from utils.atomic import atomic_path

FPS = 16  # Wan2.1's frame rate


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """video: [T, 3, H, W] in [-1, 1] -> [T, H, W, 3] uint8."""
    pixels = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def write_video(path: str | os.PathLike, chunks: Iterable[torch.Tensor], fps: int = FPS) -> int:
    """Write consecutive chunks [T_i, 3, H, W] (values in [-1, 1]) as one H.264 mp4; returns the frame count."""
    frames = 0
    with atomic_path(path) as tmp:
        writer = imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                    quality=8, pixelformat="yuv420p", macro_block_size=1)
        try:
            for chunk in chunks:
                for frame in to_uint8_frames(chunk):
                    writer.append_data(frame)
                    frames += 1
        finally:
            writer.close()
        if frames == 0:
            raise ValueError(f"no frames to write to '{path}'")
    return frames


def read_video(path: str | os.PathLike) -> np.ndarray:
    """[T, H, W, 3] uint8 frames of an mp4."""
    return np.stack(imageio.mimread(path, format="FFMPEG", memtest=False))
