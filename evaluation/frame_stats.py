"""Weight-free per-frame statistics of decoded video: CIE Lab colour, luminance, sharpness, motion.

Frames are processed in chunks so that a 2-minute 480p video never exists as one float tensor.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# sRGB (D65) -> CIE XYZ, and the D65 white point (IEC 61966-2-1, CIE 15)
_RGB_TO_XYZ = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                            [0.2126729, 0.7151522, 0.0721750],
                            [0.0193339, 0.1191920, 0.9503041]])
_WHITE_D65 = torch.tensor([0.95047, 1.0, 1.08883])
_LUMA_601 = torch.tensor([0.299, 0.587, 0.114])  # grey level of the sharpness / motion statistics
_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
_CHUNK = 64


@dataclass
class FrameStats:
    """Per-frame series of one video, each [T] (motion [T]: 0 for the first frame)."""

    lab_mean: np.ndarray  # [T, 3] mean L*, a*, b*
    lab_std: np.ndarray  # [T, 3] spatial std of L*, a*, b*
    luminance: np.ndarray  # [T] mean relative luminance Y in [0, 1]
    sharpness: np.ndarray  # [T] variance of the Laplacian of the grey image (0..255 scale)
    motion: np.ndarray  # [T] mean |grey_t - grey_{t-1}| (0..255 scale)


def srgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """rgb: [..., 3] in [0, 1] (sRGB) -> [..., 3] (L* in [0, 100], a*, b*)."""
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _RGB_TO_XYZ.T / _WHITE_D65
    delta = 6.0 / 29.0
    f = torch.where(xyz > delta ** 3, xyz.clamp_min(1e-12) ** (1.0 / 3.0), xyz / (3 * delta ** 2) + 4.0 / 29.0)
    fx, fy, fz = f.unbind(-1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-1)


def relative_luminance(rgb: torch.Tensor) -> torch.Tensor:
    """rgb: [..., 3] in [0, 1] (sRGB) -> Y: [...] in [0, 1]."""
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    return linear @ _RGB_TO_XYZ[1]


def laplacian_variance(grey: torch.Tensor) -> torch.Tensor:
    """grey: [T, H, W] -> [T] variance of the 3x3 Laplacian response (valid region)."""
    response = F.conv2d(grey.unsqueeze(1), _LAPLACIAN)
    return response.flatten(1).var(dim=1, unbiased=False)


def frame_stats(frames: np.ndarray) -> FrameStats:
    """frames: [T, H, W, 3] uint8 -> per-frame statistics."""
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("lab_mean", "lab_std", "luminance", "sharpness")}
    previous = None
    motion = []
    for start in range(0, len(frames), _CHUNK):
        rgb = torch.from_numpy(frames[start:start + _CHUNK]).float() / 255.0  # [t, H, W, 3]
        lab = srgb_to_lab(rgb).flatten(1, 2)  # [t, H*W, 3]
        grey = rgb @ _LUMA_601 * 255.0  # [t, H, W]
        parts["lab_mean"].append(lab.mean(1))
        parts["lab_std"].append(lab.std(1, unbiased=False))
        parts["luminance"].append(relative_luminance(rgb).flatten(1).mean(1))
        parts["sharpness"].append(laplacian_variance(grey))
        with_previous = grey if previous is None else torch.cat([previous, grey])
        diffs = (with_previous[1:] - with_previous[:-1]).abs().flatten(1).mean(1)
        motion.append(torch.cat([torch.zeros(1), diffs]) if previous is None else diffs)
        previous = grey[-1:]
    cat = {k: torch.cat(v).double().numpy() for k, v in parts.items()}
    return FrameStats(cat["lab_mean"], cat["lab_std"], cat["luminance"], cat["sharpness"],
                      torch.cat(motion).double().numpy())
