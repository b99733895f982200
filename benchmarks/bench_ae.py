"""Retrieval-AE cost on CPU at the paper geometry: training chunks/s with the project's chunk reader
vs a reader that loads the whole video file for every chunk, and ms to encode one frame.

    python benchmarks/bench_ae.py [--videos 4] [--frames 120] [--batch-size 2] [--steps 5] [--read-batches 32]

A temporary corpus of random latent videos [T, 16, 60, 104] (float32) is written twice: as a folder
of .pt files (the released layout) and as a latent corpus (utils.latent_corpus, safetensors). The
model is the paper's (hidden [64, 128, 256], latent 1024, S = 8 frames per chunk), fp32. Readers:

  ours_pt      ae.data on the .pt folder (torch.load with mmap: a chunk reads its own pages)
  ours_corpus  ae.data on the latent corpus (safetensors slice)
  naive        torch.load of the whole .pt file for every chunk (the reference trainer's reader)

All readers serve the same chunk plan through a DataLoader (num_workers 0, so reading is not hidden
behind compute). Figures: reader chunks/s (the loader alone); training chunks/s (load + a full AdamW
step: forward, backward, clip, step; the readers take turns step by step, and since the step is the
same computation for all, each is charged the mean step time over all steps, so that other load on a
shared machine hits them alike); encoder ms per frame (batch 1, one 3-frame block, 32 frames). The
files were just written, so they sit in the page cache: the naive reader pays a copy of the whole
file, not a disk read. The last line is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ae.data import LatentChunkDataset, VideoRecord, discover_videos
from ae.losses import LossConfig
from ae.model import AEConfig, RetrievalAutoencoder
from ae.train import chunk_loss_terms
from utils import latent_corpus

PAPER = AEConfig()  # [16, 60, 104], hidden [64, 128, 256], latent 1024
SEQ_LEN = 8


class WholeFileChunks(LatentChunkDataset):
    """The same chunk plan, read the reference way: the whole video file for every chunk."""

    def __getitem__(self, i: int) -> torch.Tensor:
        vid, start = self._plan[i]
        video = torch.load(self.videos[vid].path, map_location="cpu", weights_only=True)  # [T, C, H, W]
        return video[start : start + self.seq_len].float()


def write_corpus(root: Path, videos: int, frames: int, seed: int) -> tuple[Path, Path]:
    """The same random videos as a .pt folder and as a latent corpus; returns both folders."""
    pt_dir, corpus_dir = root / "pt", root / "corpus"
    pt_dir.mkdir()
    g = torch.Generator().manual_seed(seed)
    shape = (PAPER.in_channels, PAPER.spatial_h, PAPER.spatial_w)
    for i in tqdm(range(videos), desc="write corpus", leave=False):
        latents = torch.randn(frames, *shape, generator=g)  # [T, 16, 60, 104]
        torch.save(latents, pt_dir / f"latent_{i:06d}.pt")
        latent_corpus.write_video(corpus_dir, f"latent_{i:06d}", latents, {"source": "bench_ae random latents"})
    return pt_dir, corpus_dir


def datasets(pt_dir: Path, corpus_dir: Path, chunks_per_video: int, seed: int) -> dict[str, LatentChunkDataset]:
    shape = (PAPER.in_channels, PAPER.spatial_h, PAPER.spatial_w)
    pt_videos: list[VideoRecord] = discover_videos(pt_dir, shape, SEQ_LEN)
    corpus_videos = discover_videos(corpus_dir, shape, SEQ_LEN)
    return {
        "ours_pt": LatentChunkDataset(pt_videos, SEQ_LEN, chunks_per_video, seed),
        "ours_corpus": LatentChunkDataset(corpus_videos, SEQ_LEN, chunks_per_video, seed),
        "naive": WholeFileChunks(pt_videos, SEQ_LEN, chunks_per_video, seed),
    }


def loader(ds: LatentChunkDataset, batch_size: int) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, shuffle=False, drop_last=True, num_workers=0)


def reader_chunks_per_s(ds: LatentChunkDataset, batch_size: int, batches: int) -> float:
    it = iter(loader(ds, batch_size))
    next(it)  # first file opens
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - start)


def training_chunks_per_s(sets: dict[str, LatentChunkDataset], names: list[str], batch_size: int, steps: int, warmup: int, seed: int) -> dict[str, dict]:
    """Full training steps, the readers taking turns; per reader: chunks/s and mean load / step seconds."""
    torch.manual_seed(seed)
    model = RetrievalAutoencoder(PAPER).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-4)
    loss = LossConfig()
    iters = {name: iter(loader(sets[name], batch_size)) for name in names}
    times = {name: {"load": [], "step": []} for name in names}
    for i in tqdm(range(warmup + steps), desc="train steps", leave=False):
        for name in names:
            t0 = time.perf_counter()
            x = next(iters[name])  # [B, S, C, H, W]
            t1 = time.perf_counter()
            terms = chunk_loss_terms(model, x, loss, autocast=False)
            terms["total"].mean().backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if i >= warmup:
                times[name]["load"].append(t1 - t0)
                times[name]["step"].append(time.perf_counter() - t1)
    # the step is the same computation whatever the reader, so every reader is charged the mean step
    # time over all of them; on a shared machine this keeps noise in the step out of the comparison
    step = statistics.mean(s for t in times.values() for s in t["step"])
    return {
        name: {
            "chunks_per_s": round(batch_size / (statistics.mean(t["load"]) + step), 4),
            "load_s_per_batch": round(statistics.mean(t["load"]), 4),
            "step_s_per_batch": round(statistics.mean(t["step"]), 3),
        }
        for name, t in times.items()
    }


@torch.no_grad()
def encode_ms_per_frame(batch: int, repeats: int, seed: int) -> float:
    torch.manual_seed(seed)
    model = RetrievalAutoencoder(PAPER).eval()
    x = torch.randn(batch, PAPER.in_channels, PAPER.spatial_h, PAPER.spatial_w)
    model.encode(x)  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.encode(x)
        samples.append((time.perf_counter() - start) * 1000 / batch)
    return round(statistics.median(samples), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=4, help="videos in the temporary corpus")
    parser.add_argument("--frames", type=int, default=120, help="latent frames per video")
    parser.add_argument("--batch-size", type=int, default=2, help="chunks per training step")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per reader")
    parser.add_argument("--warmup", type=int, default=1, help="untimed training steps per reader first")
    parser.add_argument("--read-batches", type=int, default=32, help="timed loader batches per reader (reader-only figure)")
    parser.add_argument("--encode-repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # each figure iterates its own loader from the start of the plan
    batches = max(args.warmup + args.steps, args.read_batches + 1)
    chunks_per_video = -(-batches * args.batch_size // args.videos)

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench_ae_") as tmp:
        pt_dir, corpus_dir = write_corpus(Path(tmp), args.videos, args.frames, args.seed)
        sets = datasets(pt_dir, corpus_dir, chunks_per_video, args.seed)
        readers = {name: round(reader_chunks_per_s(ds, args.batch_size, args.read_batches), 2) for name, ds in sets.items()}
        train = training_chunks_per_s(sets, ["ours_pt", "naive"], args.batch_size, args.steps, args.warmup, args.seed)
    encode = {batch: encode_ms_per_frame(batch, args.encode_repeats, args.seed) for batch in (1, 3, 32)}

    result = {
        "geometry": [PAPER.in_channels, PAPER.spatial_h, PAPER.spatial_w],
        "hidden_dims": list(PAPER.hidden_dims),
        "latent_dim": PAPER.latent_dim,
        "seq_len": SEQ_LEN,
        "videos": args.videos,
        "frames_per_video": args.frames,
        "batch_size": args.batch_size,
        "reader_chunks_per_s": readers,
        "reader_speedup": round(readers["ours_pt"] / readers["naive"], 2),
        "reader_speedup_corpus": round(readers["ours_corpus"] / readers["naive"], 2),
        "train": train,
        "train_speedup": round(train["ours_pt"]["chunks_per_s"] / train["naive"]["chunks_per_s"], 3),
        "encode_ms_per_frame": encode[1],
        "encode_ms_per_frame_batch3": encode[3],
        "encode_ms_per_frame_batch32": encode[32],
        "torch_threads": torch.get_num_threads(),
        "loadavg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    print(f"reader chunks/s: ours (.pt mmap) {readers['ours_pt']}, ours (corpus) {readers['ours_corpus']}, "
          f"naive (whole file) {readers['naive']} -> {result['reader_speedup']}x")
    print(f"training chunks/s: ours {train['ours_pt']['chunks_per_s']}, naive {train['naive']['chunks_per_s']} "
          f"-> {result['train_speedup']}x (step {train['ours_pt']['step_s_per_batch']} s per {args.batch_size} chunks)")
    print(f"encode ms/frame: {encode[1]} (1 frame), {encode[3]} (3 frames), {encode[32]} (32 frames)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
