"""Cost of the weight-free drift metrics at the real video size (480 x 832, 16 fps), on this machine.

    python benchmarks/bench_drift.py [--seconds 4] [--latent-frames 120]

Times, on random content: reading an H.264 mp4 of `seconds` seconds (written first with the project's
writer settings through imageio), the pixel scores of its frames (Lab, luminance, Laplacian, motion,
clips, drift curves, VDE), and for `latent-frames` latent frames [16, 60, 104] the similarity curves
of channel means and of the paper-size retrieval AE (random init; hidden [64, 128, 256], latent 1024).
Per-second costs are extrapolated to a 30 s / 60 s / 120 s video (477 / 957 / 1917 frames). The last
line is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch

from ae.model import AEConfig, RetrievalAutoencoder
from evaluation.config import DriftConfig
from evaluation.video_scores import latent_scores, pixel_scores

FPS = 16


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--latent-frames", type=int, default=120)
    args = parser.parse_args()
    torch.manual_seed(0)
    frames = np.random.default_rng(0).integers(0, 256, (int(args.seconds * FPS), 480, 832, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.mp4"
        imageio.mimwrite(path, list(frames), fps=FPS, codec="libx264", quality=8, macro_block_size=1)
        decoded, read_s = timed(lambda: np.stack(imageio.mimread(path, memtest=False)))
    _, pixel_s = timed(lambda: pixel_scores(decoded, FPS, DriftConfig()))
    latents = torch.randn(args.latent_frames, 16, 60, 104)
    ae = RetrievalAutoencoder(AEConfig()).eval()
    with torch.no_grad():
        embeddings, encode_s = timed(lambda: torch.cat([ae.encode(c) for c in latents.split(32)]))
    _, curves_s = timed(lambda: latent_scores(latents, embeddings, FPS / 4, DriftConfig()))
    per_frame = (read_s + pixel_s) / len(decoded)
    per_latent = (encode_s + curves_s) / args.latent_frames
    per_video = {f"{s}s": per_frame * (1 + 4 * (4 * s - 1)) + per_latent * 4 * s for s in (30, 60, 120)}
    figures = {"frames": len(decoded), "read_ms_per_frame": 1000 * read_s / len(decoded),
               "pixel_scores_ms_per_frame": 1000 * pixel_s / len(decoded),
               "ae_encode_ms_per_latent_frame": 1000 * encode_s / args.latent_frames,
               "latent_curves_ms_per_latent_frame": 1000 * curves_s / args.latent_frames,
               "seconds_per_video": per_video,
               "table2_cpu_hours_one_process": sum(per_video.values()) * 128 * 3 * 4 / 3600}
    for key, value in figures.items():
        print(f"{key}: {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
