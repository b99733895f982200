"""Weight-free per-frame statistics of decoded video: CIE Lab colour, luminance, sharpness, motion.

Frames are processed in chunks so that a 2-minute 480p video never exists as one float tensor.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# sRGB (D65) -> CIE XYZ, and the D65 white point (IEC 61966-2-1, CIE 15)
_RGB_TO_XYZ = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                            [0.2126729, 0.7151522, 0.0721750],
                            [0.0193339, 0.1191920, 0.9503041]])
_WHITE_D65 = torch.tensor([0.95047, 1.0, 1.08883])
_LUMA_601 = torch.tensor([0.299, 0.587, 0.114])  # grey level of the sharpness / motion statistics
_CHUNK = 16  # frames per step: ~4 float copies of 16 x 480 x 832 x 3 stay under 0.5 GB


@dataclass
class FrameStats:
    """Per-frame series of one video, each [T] (motion [T]: 0 for the first frame)."""

    lab_mean: np.ndarray  # [T, 3] mean L*, a*, b*
    lab_std: np.ndarray  # [T, 3] spatial std of L*, a*, b*
    luminance: np.ndarray  # [T] mean relative luminance Y in [0, 1]
    sharpness: np.ndarray  # [T] variance of the Laplacian of the grey image (0..255 scale)
    motion: np.ndarray  # [T] mean |grey_t - grey_{t-1}| (0..255 scale)


def srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB values in [0, 1] -> linear light (IEC 61966-2-1 decoding)."""
    return torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)


# linear light of the 256 uint8 levels: frames are decoded by table lookup, not by a power per pixel
_LINEAR_LEVELS = srgb_to_linear(torch.arange(256, dtype=torch.float32) / 255).numpy()


def srgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """rgb: [..., 3] in [0, 1] (sRGB) -> [..., 3] (L* in [0, 100], a*, b*)."""
    return linear_to_lab(srgb_to_linear(rgb))


def linear_to_lab(linear: torch.Tensor) -> torch.Tensor:
    """linear: [..., 3] linear-light RGB -> [..., 3] CIE Lab (D65)."""
    xyz = linear @ _RGB_TO_XYZ.to(linear.device).T / _WHITE_D65.to(linear.device)
    delta = 6.0 / 29.0
    f = torch.where(xyz > delta ** 3, xyz.clamp_min(1e-12) ** (1.0 / 3.0), xyz / (3 * delta ** 2) + 4.0 / 29.0)
    fx, fy, fz = f.unbind(-1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-1)


def relative_luminance(rgb: torch.Tensor) -> torch.Tensor:
    """rgb: [..., 3] in [0, 1] (sRGB) -> Y: [...] in [0, 1]."""
    return srgb_to_linear(rgb) @ _RGB_TO_XYZ[1]


def laplacian_variance(grey: torch.Tensor) -> torch.Tensor:
    """grey: [T, H, W] -> [T] variance of the 4-neighbour Laplacian response (valid region).

    Written with slices: 4x faster than a one-channel conv2d on CPU."""
    response = (grey[:, :-2, 1:-1] + grey[:, 2:, 1:-1] + grey[:, 1:-1, :-2] + grey[:, 1:-1, 2:]
                - 4 * grey[:, 1:-1, 1:-1])
    return response.flatten(1).var(dim=1, unbiased=False)


def frame_stats(frames: np.ndarray, device: torch.device = torch.device("cpu")) -> FrameStats:
    """frames: [T, H, W, 3] uint8 -> per-frame statistics, computed on `device`."""
    levels, to_xyz, luma = (t.to(device) for t in (torch.from_numpy(_LINEAR_LEVELS), _RGB_TO_XYZ, _LUMA_601))
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("lab_mean", "lab_std", "luminance", "sharpness")}
    previous = None
    motion = []
    for start in range(0, len(frames), _CHUNK):
        chunk = torch.from_numpy(frames[start:start + _CHUNK]).to(device)  # [t, H, W, 3] uint8
        linear = levels[chunk.long()]
        lab = linear_to_lab(linear).flatten(1, 2)  # [t, H*W, 3]
        grey = chunk.float() @ luma  # [t, H, W], 0..255
        parts["lab_mean"].append(lab.mean(1).cpu())
        parts["lab_std"].append(lab.std(1, unbiased=False).cpu())
        parts["luminance"].append((linear @ to_xyz[1]).flatten(1).mean(1).cpu())
        parts["sharpness"].append(laplacian_variance(grey).cpu())
        with_previous = grey if previous is None else torch.cat([previous, grey])
        diffs = (with_previous[1:] - with_previous[:-1]).abs().flatten(1).mean(1).cpu()
        motion.append(torch.cat([torch.zeros(1), diffs]) if previous is None else diffs)
        previous = grey[-1:]
    cat = {k: torch.cat(v).double().numpy() for k, v in parts.items()}
    return FrameStats(cat["lab_mean"], cat["lab_std"], cat["luminance"], cat["sharpness"],
                      torch.cat(motion).double().numpy())
