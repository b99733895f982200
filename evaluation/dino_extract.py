"""Per-frame DINO ViT-B/16 CLS features of videos, run by the VBench venv's Python only
(evaluation/dino.py starts it as a subprocess; the project's environment never imports its modules).

It decodes with decord and builds the model from the DINO code and weights in the VBench cache, the
same pieces VBench's subject consistency uses. Every `--frame_stride`-th frame (0, s, 2s, ...) is
resized so that its short side is `--image_size` (the patch grid keeps the aspect ratio; DINO
interpolates its position embedding), normalised with the ImageNet statistics DINO was trained
with, and encoded; the feature is the CLS token after the final norm.
Writes `<output_dir>/<name>.npy` per manifest entry: [ceil(T / stride), 768] float32.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BATCH = 32  # frames encoded at once


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True, help="JSON {name: video path}")
    parser.add_argument("--output_dir", required=True, help="<name>.npy features are written here")
    parser.add_argument("--code", required=True, help="facebookresearch/dino checkout (its hubconf.py)")
    parser.add_argument("--weights", required=True, help="dino_vitbase16_pretrain.pth")
    parser.add_argument("--frame_stride", type=int, required=True, help="encode frames 0, s, 2s, ...")
    parser.add_argument("--image_size", type=int, required=True, help="short side of the encoded frames")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # imported here: these are the VBench venv's packages (and `--help` works anywhere)
    import numpy as np
    import torch
    import torch.nn.functional as F
    from decord import VideoReader, cpu

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = torch.hub.load(args.code, "dino_vitb16", source="local", pretrained=False)
    model.load_state_dict(torch.load(args.weights, map_location="cpu"), strict=True)
    model.eval().to(device)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    out = Path(args.output_dir)
    for name, video in json.loads(Path(args.manifest).read_text()).items():
        reader = VideoReader(video, ctx=cpu(0))
        indices = list(range(0, len(reader), args.frame_stride))
        features = []
        with torch.no_grad():
            for start in range(0, len(indices), BATCH):
                frames = torch.from_numpy(reader.get_batch(indices[start:start + BATCH]).asnumpy())  # [B, H, W, 3] uint8
                x = frames.to(device).permute(0, 3, 1, 2).float() / 255  # [B, 3, H, W]
                scale = args.image_size / min(x.shape[-2:])
                size = (math.floor(x.shape[-2] * scale + 0.5), math.floor(x.shape[-1] * scale + 0.5))
                x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
                features.append(model((x - mean) / std).float().cpu())  # [B, 768]
        tmp = out / f"{name}.partial.npy"
        np.save(tmp, torch.cat(features).numpy())
        tmp.replace(out / f"{name}.npy")  # a crash leaves no complete-looking file
        print(f"{name}: {len(indices)} frames", flush=True)


if __name__ == "__main__":
    main()
