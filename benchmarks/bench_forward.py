"""Backbone cost on CPU: ms per block (N denoising calls + the recache call) and KV-cache bytes.

    python benchmarks/bench_forward.py [--blocks 7] [--warmup 4] [--demo-blocks 20] [--threads 0]

Native sliding window (window 12 frames, sink 1, 3 frames per block, 4 steps), fp32, random
weights (cost does not depend on them), two models:
  demo  the `demo` preset on latent frames [16, 8, 8];
  mid   dim 512, 8 layers, 8 heads, ffn 2048, freq 256, text_dim 512, text_len 512, frames [16, 30, 52].
Blocks before --warmup are not timed; the window is full from block 3 on, frames leave it from
block 4 on, so the default measures the steady state. KV-cache bytes are what FrameKVCache
allocates (all at construction, so also its peak); the full-size figure builds the cache of
Wan2.1-1.3B at 480x832 on the `meta` device, which allocates nothing. The last line is one JSON
object with every figure.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from tqdm.auto import tqdm

from pipeline.generation_config import GenerationConfig
from pipeline.build import build_context_method
from pipeline.prompt_schedule import PromptSchedule
from pipeline.retrieval import RandomRetrieval
from pipeline.rollout import CausalRollout, gaussian_noise
from pipeline.rollout_config import RolloutConfig
from wan.geometry import LatentGeometry
from wan.kv_cache import FrameKVCache
from wan.model import CausalWanModel
from wan.model_config import WanModelConfig, model_preset

MID = WanModelConfig(dim=512, ffn_dim=2048, freq_dim=256, text_dim=512, text_len=512, num_heads=8, num_layers=8)
FULL_SIZE = GenerationConfig()  # the defaults: Wan2.1-1.3B, 480x832 video through the 8x VAE


@torch.no_grad()
def time_blocks(name: str, cfg: WanModelConfig, latent_shape: tuple[int, int, int], blocks: int, warmup: int, seed: int) -> dict:
    """Run `blocks` blocks of a native rollout; returns ms per block after warm-up and the cache bytes."""
    torch.manual_seed(seed)
    model = CausalWanModel(cfg).eval()
    rcfg = RolloutConfig()
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randn(1, 16, cfg.text_dim, generator=g)
    nf = rcfg.num_frame_per_block
    rollout = CausalRollout(model, rcfg, build_context_method(rcfg, RandomRetrieval).policy, [prompt], latent_shape, blocks * nf)

    noise = gaussian_noise(g)
    samples = []
    for block in tqdm(PromptSchedule.single("").blocks(blocks * nf, nf), desc=name, leave=False):
        start = time.perf_counter()
        attn = rollout.begin_block(block)
        x0 = rollout.denoise_block(attn, noise((1, nf, *latent_shape)), noise)
        _, kv = rollout.recache(attn, x0, noise)
        rollout.end_block(block, attn, x0, kv)
        if block.index >= warmup:
            samples.append((time.perf_counter() - start) * 1000)
    calls = len(rcfg.denoising_step_list) + 1
    return {
        "ms_per_block": round(statistics.mean(samples), 1),
        "ms_per_block_min": round(min(samples), 1),
        "ms_per_call": round(statistics.mean(samples) / calls, 1),
        "timed_blocks": len(samples),
        "tokens_per_frame": rollout.geometry.tokens_per_frame,
        "kv_cache_bytes": rollout.policy.cache.nbytes(),
        "text_kv_bytes": sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in rollout.text.kv),
    }


def full_size_kv_cache_bytes(dtype: torch.dtype) -> int:
    cfg, mk = model_preset(FULL_SIZE.model_preset), FULL_SIZE.model_kwargs
    tokens = LatentGeometry.of(cfg, FULL_SIZE.latent_height, FULL_SIZE.latent_width).tokens_per_frame
    cache = FrameKVCache(cfg.num_layers, 1, mk.local_attn_size, mk.sink_size, tokens, cfg.num_heads, cfg.head_dim, "meta", dtype)
    return cache.nbytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=7, help="blocks of the mid-size rollout (each 3 frames)")
    parser.add_argument("--warmup", type=int, default=4, help="leading blocks not timed (both models)")
    parser.add_argument("--demo-blocks", type=int, default=20, help="blocks of the demo rollout")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if min(args.blocks, args.demo_blocks) <= args.warmup:
        parser.error(f"--blocks and --demo-blocks must exceed --warmup {args.warmup}")
    if args.threads:
        torch.set_num_threads(args.threads)

    figures = {"threads": torch.get_num_threads(), "dtype": "float32", "window": 12, "sink": 1, "steps": 4}
    figures["demo"] = time_blocks("demo", model_preset("demo"), (16, 8, 8), args.demo_blocks, args.warmup, args.seed)
    figures["mid"] = time_blocks("mid", MID, (16, 30, 52), args.blocks, args.warmup, args.seed)
    for name, shape in (("demo", "[16, 8, 8]"), ("mid", "[16, 30, 52]")):
        f = figures[name]
        print(
            f"{name} (frames {shape}, {f['tokens_per_frame']} tokens/frame): {f['ms_per_block']:.1f} ms/block "
            f"({f['ms_per_call']:.1f} ms/call, mean of {f['timed_blocks']} blocks), KV cache {f['kv_cache_bytes'] / 1e6:.2f} MB, "
            f"text K/V {f['text_kv_bytes'] / 1e6:.2f} MB"
        )
    figures["full_size_kv_cache_bytes_bf16"] = full_size_kv_cache_bytes(torch.bfloat16)
    figures["full_size_kv_cache_bytes_fp32"] = full_size_kv_cache_bytes(torch.float32)
    print(
        f"full size (Wan2.1-1.3B, 480x832, window 12): KV cache {figures['full_size_kv_cache_bytes_bf16'] / 1e9:.2f} GB bf16, "
        f"{figures['full_size_kv_cache_bytes_fp32'] / 1e9:.2f} GB fp32"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
