"""Embedding analysis of a retrieval descriptor: the frame-to-frame cosine-similarity map of a video
(paper Figure 3) and, on toy videos with known scenes and segments, scores that say what they mean:

- `near_same` / `near_cut`: mean cosine similarity of frame pairs 1..3 frames apart inside one
  segment / across a scene cut (smoothness where the scene stays; contrast where it changes);
- `revisit_precision`: retrieval as the pipeline does it (`pipeline.retrieval.select_top_k`): at the
  end of every block the newest frame queries the history bank (the frames evicted from the window
  cache) outside the recency guard; counted only for queries whose scene was shown in an earlier
  segment that the bank holds; the query's own segment is never a candidate. Share of retrieved
  frames that show the query's scene;
- `revisit_auroc`: how well cosine similarity separates frame pairs of one scene seen in two
  different segments (revisit pairs) from pairs of different scenes;
- `mean_cosine`, `const_to_var`: the collapse monitor (ae/collapse.py) on the same frames.

Every score comes with its best possible and chance values. Pass toy videos the encoder was not
trained on: a folder made with other seeds, or the training folder itself, of which only the
checkpoint's validation videos are then used.

    python -m ae.analyze --ckpt CKPT --video FILE.pt --out sim.png [--toy-dir DIR]

The last stdout line is one JSON object with the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm import tqdm

from ae.collapse import embedding_stats
from ae.model import AECheckpointError, RetrievalAutoencoder, load_retrieval_autoencoder
from pipeline.retrieval import select_top_k
from pipeline.rollout_config import RolloutConfig
from utils.atomic import atomic_path
from utils.assets import MissingAssetError, require_user_path
from utils.checkpoint_io import CorruptCheckpointError, load_checkpoint

SCENES_FILE = "scenes.json"
NEAR_OFFSETS = 3  # frame pairs 1..3 apart count as near the diagonal
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

Descriptor = Callable[[torch.Tensor], torch.Tensor]  # frames [T, C, H, W] -> descriptors [T, D]


@dataclass(frozen=True)
class RetrievalGeometry:
    """When the pipeline retrieves and what its history bank holds (defaults: RolloutConfig's)."""

    block: int  # frames per block; the newest frame of each finished block is a query
    window: int  # attention window in frames, sink included
    sink: int
    top_k: int
    recent_exclude: int

    @classmethod
    def from_rollout(cls, cfg: RolloutConfig) -> "RetrievalGeometry":
        mk = cfg.model_kwargs
        return cls(cfg.num_frame_per_block, mk.local_attn_size, mk.sink_size, mk.memory_size, mk.recent_exclude)

    def query_frames(self, num_frames: int) -> range:
        """The newest frame before every block start after the first: the pipeline's retrieval queries."""
        return range(self.block - 1, num_frames - 1, self.block)

    def bank_frames(self, query: int) -> range:
        """Frames in the history bank when `query` is the newest finished frame, oldest first.

        The window cache keeps the sink frames and a ring of window - sink slots; writing frame f
        evicts frame f - (window - sink) into the bank.
        """
        return range(self.sink, max(self.sink, query - (self.window - self.sink) + 1))


@dataclass(frozen=True)
class ToyVideo:
    name: str
    scenes: list[int]  # scene id of every frame
    segments: list[int]  # segment index of every frame


def cosine_similarity_matrix(v: torch.Tensor) -> torch.Tensor:
    """v: [T, D] -> [T, T] cosine similarity of every frame pair."""
    u = F.normalize(v.float(), dim=-1)
    return u @ u.T


def near_diagonal_pairs(v: torch.Tensor, segments: list[int], max_offset: int = NEAR_OFFSETS) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities of frame pairs 1..max_offset apart: (same-segment pairs, across-cut pairs)."""
    sim, seg = cosine_similarity_matrix(v), torch.as_tensor(segments)
    same, cut = [], []
    for k in range(1, min(max_offset, v.shape[0] - 1) + 1):
        within = seg[k:] == seg[:-k]
        same.append(sim.diagonal(k)[within])
        cut.append(sim.diagonal(k)[~within])
    return torch.cat(same), torch.cat(cut)


def revisit_pairs(v: torch.Tensor, video: ToyVideo) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities of frame pairs in different segments: (same scene = revisit pairs, other scenes)."""
    sim = cosine_similarity_matrix(v)
    scene, seg = torch.as_tensor(video.scenes), torch.as_tensor(video.segments)
    i, j = torch.triu_indices(len(scene), len(scene), offset=1)
    apart = seg[i] != seg[j]
    i, j = i[apart], j[apart]
    revisit = scene[i] == scene[j]
    return sim[i[revisit], j[revisit]], sim[i[~revisit], j[~revisit]]


def auroc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    if len(positive) == 0 or len(negative) == 0:
        raise ValueError(f"AUROC needs positives and negatives, got {len(positive)} and {len(negative)}")
    scores = torch.cat([positive, negative]).double()
    order = scores.argsort()
    _, inverse, counts = torch.unique_consecutive(scores[order], return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    ranks = torch.empty_like(scores)
    ranks[order] = (ends - (counts.double() - 1) / 2)[inverse]  # 1-based average rank of each tie group
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass
class RevisitCounts:
    queries: int = 0
    retrieved: int = 0
    hits: int = 0
    best: float = 0.0  # hits of a perfect ranking
    chance: float = 0.0  # expected hits of a uniform choice among the same candidates

    def add(self, other: "RevisitCounts") -> None:
        for key in ("queries", "retrieved", "hits", "best", "chance"):
            setattr(self, key, getattr(self, key) + getattr(other, key))


def revisit_counts(v: torch.Tensor, video: ToyVideo, geometry: RetrievalGeometry) -> RevisitCounts:
    """Retrieval hits of one video's queries whose scene the bank holds from an earlier segment. v: [T, D]."""
    scene, seg = torch.as_tensor(video.scenes), torch.as_tensor(video.segments)
    out = RevisitCounts()
    for q in geometry.query_frames(v.shape[0]):
        held = geometry.bank_frames(q)
        bank = torch.arange(held.start, held.stop)
        # the query's own segment is the newest stretch of the bank: widen the guard over it
        guard = max(geometry.recent_exclude, int((seg[bank] == seg[q]).sum()))
        selection = select_top_k(v[q][None], v[bank][None], guard, geometry.top_k)
        if selection is None:
            continue
        candidates = bank[: len(bank) - guard]
        same = int((scene[candidates] == scene[q]).sum())
        if same == 0:
            continue
        picked = bank[selection.pool_indices[0]]
        n = len(picked)
        out.add(RevisitCounts(1, n, int((scene[picked] == scene[q]).sum()), min(n, same), n * same / len(candidates)))
    return out


def toy_scores(embeddings: dict[str, torch.Tensor], videos: list[ToyVideo], geometry: RetrievalGeometry) -> dict:
    """Every score of the descriptors `embeddings` ({video name: [T, D]}) of `videos`, pooled over the
    frames / pairs / queries of all videos."""
    same, cut, pos, neg = [], [], [], []
    counts = RevisitCounts()
    for video in videos:
        v = embeddings[video.name]
        s, c = near_diagonal_pairs(v, video.segments)
        p, n = revisit_pairs(v, video)
        same.append(s), cut.append(c), pos.append(p), neg.append(n)
        counts.add(revisit_counts(v, video, geometry))
    if counts.queries == 0:
        raise ValueError("no query has its scene in the history bank from an earlier segment; use longer videos or more revisits")
    return {
        "near_same": torch.cat(same).mean().item(),
        "near_cut": torch.cat(cut).mean().item(),
        "revisit_precision": counts.hits / counts.retrieved,
        "revisit_precision_best": counts.best / counts.retrieved,
        "revisit_precision_chance": counts.chance / counts.retrieved,
        "revisit_auroc": auroc(torch.cat(pos), torch.cat(neg)),
        **embedding_stats(torch.cat([embeddings[v.name] for v in videos])),
        "num_videos": len(videos),
        "num_queries": counts.queries,
    }


def embed_toy_videos(descriptor: Descriptor, toy_dir: Path, videos: list[ToyVideo], progress: bool = False) -> dict[str, torch.Tensor]:
    """{video name: descriptor of its frames [T, D]}."""
    return {v.name: descriptor(load_latent_video(toy_dir / v.name)) for v in tqdm(videos, desc="toy videos", disable=not progress)}


def scene_label_embeddings(videos: list[ToyVideo]) -> dict[str, torch.Tensor]:
    """The perfect descriptor: a one-hot scene label per frame, {video name: [T, num scenes]}."""
    num_scenes = 1 + max(max(v.scenes) for v in videos)
    return {v.name: F.one_hot(torch.as_tensor(v.scenes), num_scenes).float() for v in videos}


def random_embeddings(videos: list[ToyVideo], dim: int, seed: int) -> dict[str, torch.Tensor]:
    """A descriptor that knows nothing: an independent Gaussian vector per frame, {video name: [T, dim]}."""
    gen = torch.Generator().manual_seed(seed)
    return {v.name: torch.randn(len(v.scenes), dim, generator=gen) for v in videos}


def format_scores(scores: dict) -> str:
    parts = [
        f"near-diagonal same segment {scores['near_same']:.3f} (best 1, random 0)",
        f"across a cut {scores['near_cut']:.3f} (lower is better)",
        f"revisit precision {scores['revisit_precision']:.3f} (best {scores['revisit_precision_best']:.3f}, "
        f"chance {scores['revisit_precision_chance']:.3f}, {scores['num_queries']} queries)",
        f"revisit AUROC {scores['revisit_auroc']:.3f} (best 1, chance 0.5)",
        f"mean pairwise cosine {scores['mean_cosine']:.3f}, constant/variation {scores['const_to_var']:.2f}",
    ]
    return "; ".join(parts)


def read_toy_videos(toy_dir: Path, names: list[str] | None = None) -> list[ToyVideo]:
    """The videos of `<toy_dir>/scenes.json` (all, or those in `names`), in name order."""
    path = toy_dir / SCENES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; --toy-dir must be a folder written by toydatasets/make_toy_latents.py")
    meta = json.loads(path.read_text())
    if "segments" not in meta:
        raise ValueError(f"{path} has no per-frame segments; regenerate the folder with toydatasets/make_toy_latents.py")
    chosen = sorted(meta["videos"]) if names is None else sorted(names)
    missing = sorted(set(chosen) - set(meta["videos"]))
    if missing:
        raise ValueError(f"{path} does not list the videos {missing}")
    return [ToyVideo(n, meta["videos"][n], meta["segments"][n]) for n in chosen]


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


def plot_similarity(panels: dict[str, torch.Tensor], path: str | os.PathLike, title: str = "", dpi: int = 120) -> None:
    """Write [T, T] similarity maps side by side ({panel title: map}) as one PNG (Agg canvas, no pyplot state)."""
    fig = Figure(figsize=(1.0 + 4.2 * len(panels), 4.2), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, sim) in zip(axes, panels.items()):
        image = ax.imshow(sim.numpy(), cmap="viridis", interpolation="nearest", vmin=-1, vmax=1)
        ax.set(xlabel="frame", ylabel="frame", title=name)
    fig.colorbar(image, ax=list(axes), label="cosine similarity")
    if title:
        fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def held_out_names(ckpt_path: str | os.PathLike, toy_dir: Path) -> list[str] | None:
    """The checkpoint's validation videos when `toy_dir` is the folder it was trained on, else None (all)."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    trained_on = Path(ckpt["config"]["data_dir"])
    if "data_split" in ckpt and trained_on.exists() and trained_on.resolve() == toy_dir.resolve():
        return ckpt["data_split"]["val"]
    return None


def parse_args(argv=None) -> argparse.Namespace:
    defaults = RetrievalGeometry.from_rollout(RolloutConfig())
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", required=True, help="retrieval AE checkpoint ({'model', 'config'})")
    p.add_argument("--video", required=True, help="latent video .pt holding [T, C, H, W]")
    p.add_argument("--out", required=True, help="output PNG of the similarity map")
    p.add_argument("--toy-dir", type=Path, help="toy dataset folder with scenes.json: also report the toy scores over it")
    p.add_argument("--all-videos", action="store_true", help="score every video of --toy-dir, even the ones the checkpoint was trained on")
    p.add_argument("--block", type=int, default=defaults.block, help="frames per block (num_frame_per_block)")
    p.add_argument("--window", type=int, default=defaults.window, help="attention window in frames (local_attn_size)")
    p.add_argument("--sink", type=int, default=defaults.sink, help="sink frames (sink_size)")
    p.add_argument("--top-k", type=int, default=defaults.top_k, help="retrieved frames per block (memory_size)")
    p.add_argument("--recent-exclude", type=int, default=defaults.recent_exclude, help="recency guard R")
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
    plot_similarity({f"{Path(args.video).name}: AE embedding similarity": cosine_similarity_matrix(v)}, args.out)
    print(f"wrote {args.out} ({v.shape[0]} frames)", file=sys.stderr)
    if args.toy_dir is None:
        near, _ = near_diagonal_pairs(v, [0] * v.shape[0])  # one segment: every near pair
        result = {"near_diagonal": near.mean().item(), "video": str(args.video)}
    else:
        geometry = RetrievalGeometry(args.block, args.window, args.sink, args.top_k, args.recent_exclude)
        names = None if args.all_videos else held_out_names(args.ckpt, args.toy_dir)
        videos = read_toy_videos(args.toy_dir, names)
        embeddings = embed_toy_videos(lambda x: embed_video(model, x, args.batch_size), args.toy_dir, videos, progress=True)
        result = toy_scores(embeddings, videos, geometry)
        result["videos"] = "all" if names is None else "validation videos of the checkpoint"
        print(format_scores(result))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
