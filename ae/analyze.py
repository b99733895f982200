"""Embedding analysis of a retrieval autoencoder: the frame-to-frame cosine-similarity map of a
video (paper Figure 3) and, on a toy dataset with known scenes, two numbers:

- `near_diag_similarity`: mean cosine similarity of frame pairs 1..3 frames apart (temporal
  smoothness of the embedding);
- `revisit_precision`: with the pipeline's retrieval rule (query = frame t, candidates = frames
  0 .. t-1-R outside the recency guard, top K by cosine), the share of retrieved frames showing the
  same scene as the query.

    python -m ae.analyze --ckpt CKPT --video FILE.pt --out sim.png [--toy-dir DIR --top-k 6 --recent-exclude 5]

The last stdout line is one JSON object with the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm import tqdm

from ae.model import AECheckpointError, RetrievalAutoencoder, load_retrieval_autoencoder
from utils.atomic import atomic_path
from utils.assets import MissingAssetError, require_user_path
from utils.checkpoint_io import CorruptCheckpointError, load_checkpoint

SCENES_FILE = "scenes.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cosine_similarity_matrix(v: torch.Tensor) -> torch.Tensor:
    """v: [T, D] -> [T, T] cosine similarity of every frame pair."""
    u = F.normalize(v.float(), dim=-1)
    return u @ u.T


def near_diag_similarity(v: torch.Tensor, max_offset: int = 3) -> float:
    """Mean cosine similarity over frame pairs (i, j) with 1 <= |i - j| <= max_offset; v: [T, D]."""
    if v.shape[0] < 2:
        raise ValueError(f"near_diag_similarity needs at least 2 frames, got {v.shape[0]}")
    sim = cosine_similarity_matrix(v)
    offsets = range(1, min(max_offset, v.shape[0] - 1) + 1)
    return torch.cat([sim.diagonal(k) for k in offsets]).mean().item()


def revisit_precision(v: torch.Tensor, scene_ids: list[int], top_k: int = 6, recent_exclude: int = 5) -> float:
    """Share of retrieved frames with the query's scene id, pooled over all queries that retrieve.

    Query frame t retrieves the top min(top_k, t - recent_exclude) frames among 0 .. t-1-recent_exclude
    by cosine similarity of v: [T, D]; frames with no eligible candidate are not queries.
    """
    if len(scene_ids) != v.shape[0]:
        raise ValueError(f"{len(scene_ids)} scene ids for {v.shape[0]} embeddings")
    if v.shape[0] <= recent_exclude + 1:
        raise ValueError(f"revisit_precision needs more than recent_exclude + 1 = {recent_exclude + 1} frames, got {v.shape[0]}")
    sim = cosine_similarity_matrix(v)
    ids = torch.as_tensor(scene_ids)
    hits = retrieved = 0
    for t in range(recent_exclude + 1, v.shape[0]):
        eligible = t - recent_exclude
        top = sim[t, :eligible].topk(min(top_k, eligible)).indices
        hits += int((ids[top] == ids[t]).sum())
        retrieved += len(top)
    return hits / retrieved


def load_latent_video(path: str | os.PathLike) -> torch.Tensor:
    """A latent video file as in the released toy data: a tensor [T, C, H, W]."""
    latents = load_checkpoint(require_user_path(path, "latent video (--video)", "pass a .pt file holding [T, C, H, W]"),
                              "latent video (--video)", "pass a .pt file holding [T, C, H, W]")
    if not isinstance(latents, torch.Tensor) or latents.ndim != 4:
        found = list(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise ValueError(f"{path}: expected a latent video tensor [T, C, H, W], found {found}")
    return latents


@torch.no_grad()
def embed_video(model: RetrievalAutoencoder, latents: torch.Tensor, batch_size: int = 32, progress: bool = False) -> torch.Tensor:
    """latents: [T, C, H, W] -> L2-normalised descriptors [T, D] (float32, CPU)."""
    param = next(model.parameters())
    chunks = range(0, latents.shape[0], batch_size)
    out = [model.encode(latents[i : i + batch_size].to(param.device, param.dtype)).float().cpu() for i in tqdm(chunks, desc="encode", disable=not progress)]
    return torch.cat(out)


def plot_similarity(sim: torch.Tensor, path: str | os.PathLike, title: str) -> None:
    """Write the [T, T] similarity map as a PNG (Agg canvas, no pyplot state)."""
    fig = Figure(figsize=(5.5, 4.6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(sim.numpy(), cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="cosine similarity")
    ax.set(xlabel="frame", ylabel="frame", title=title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def toy_metrics(model: RetrievalAutoencoder, toy_dir: Path, top_k: int, recent_exclude: int) -> dict:
    """Both metrics averaged over the videos listed in `<toy_dir>/scenes.json`."""
    scenes_path = toy_dir / SCENES_FILE
    if not scenes_path.is_file():
        raise FileNotFoundError(f"{scenes_path} not found; --toy-dir must be a folder written by toydatasets/make_toy_latents.py")
    scenes = json.loads(scenes_path.read_text())["videos"]
    near, precision = [], []
    for name, ids in tqdm(scenes.items(), desc="toy videos"):
        v = embed_video(model, load_latent_video(toy_dir / name))
        near.append(near_diag_similarity(v))
        precision.append(revisit_precision(v, ids, top_k, recent_exclude))
    return {
        "near_diag_similarity": sum(near) / len(near),
        "revisit_precision": sum(precision) / len(precision),
        "num_videos": len(scenes),
        "top_k": top_k,
        "recent_exclude": recent_exclude,
    }


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", required=True, help="retrieval AE checkpoint ({'model', 'config'})")
    p.add_argument("--video", required=True, help="latent video .pt holding [T, C, H, W]")
    p.add_argument("--out", required=True, help="output PNG of the similarity map")
    p.add_argument("--toy-dir", type=Path, help="toy dataset folder with scenes.json: also report both metrics over it")
    p.add_argument("--top-k", type=int, default=6)
    p.add_argument("--recent-exclude", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32, help="frames per encoder call")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if min(args.top_k, args.batch_size) < 1 or args.recent_exclude < 0:
        raise SystemExit(f"error: --top-k and --batch-size must be >= 1 and --recent-exclude >= 0, got {args.top_k}, "
                         f"{args.batch_size}, {args.recent_exclude}")
    try:
        return analyze(args)
    except (MissingAssetError, CorruptCheckpointError, AECheckpointError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None


def analyze(args: argparse.Namespace) -> dict:
    model = load_retrieval_autoencoder(args.ckpt, device=args.device, dtype=DTYPES[args.dtype]).eval()
    v = embed_video(model, load_latent_video(args.video), args.batch_size, progress=True)
    plot_similarity(cosine_similarity_matrix(v), args.out, f"{Path(args.video).name}: AE embedding similarity")
    print(f"wrote {args.out} ({v.shape[0]} frames)", file=sys.stderr)
    if args.toy_dir is None:
        result = {"near_diag_similarity": near_diag_similarity(v), "video": str(args.video)}
    else:
        result = toy_metrics(model, args.toy_dir, args.top_k, args.recent_exclude)
        print(f"near-diagonal similarity {result['near_diag_similarity']:.4f}, revisit precision {result['revisit_precision']:.4f}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
