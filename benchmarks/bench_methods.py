"""Cost of each context method relative to native: ms per block and extra bytes moved per block.

    python benchmarks/bench_methods.py [--frames 30] [--rounds 2] [--threads 0]

1. ms per block on the mid-size CPU model (dim 512, 8 layers, 8 heads, text_len 16, latent frames
   [16, 30, 52]; random weights, fp32), every method on the same noise and prompt, in alternating
   rounds (native, latentmem, infrope, deepforcing, native, ...). Per method: the mean over the
   blocks in which every method runs its steady state (latentmem retrieves K = 6 frames from block
   8 on; Deep Forcing compresses from block 4 on), best round; ratios to native come from the same
   round order. latentmem uses the paper-size retrieval AE (random weights).
2. Bytes each method's context policy writes per steady-state block at full size (Wan2.1-1.3B:
   1560 tokens per frame, 12 heads of 128, bf16, 30 layers), counted from the allocations of every
   tensor operation the policy runs (begin_block, the context of one layer, end_block) on the
   `meta` device, which allocates nothing; one layer is measured and multiplied by 30. Extra =
   method - native. latentmem uses random retrieval here so that only KV traffic is counted.
The last line is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ae.model import AEConfig, RetrievalAutoencoder
from pipeline.build import build_context_method
from pipeline.context.policy import CacheGeometry, PolicySetup
from pipeline.descriptors import EncoderDescriptor
from pipeline.prompt_schedule import PromptSchedule
from pipeline.retrieval import RandomRetrieval, TopKRetrieval
from pipeline.rollout import generate
from pipeline.rollout_config import METHODS, RolloutConfig
from wan.block_attention import BlockKV
from wan.model import CausalWanModel
from wan.model_config import WanModelConfig, model_preset
from wan.rope import Rope3D

MID = WanModelConfig(dim=512, ffn_dim=2048, freq_dim=256, text_dim=512, text_len=16, num_heads=8, num_layers=8)
MID_FRAME = (16, 30, 52)
FULL_SIZE_GRID = (30, 52)  # 480x832 video -> latent 60x104 -> patch grid 30x52
STEADY_FROM_BLOCK = 8  # latentmem retrieves its full K from block 8 on


def time_methods(frames: int, rounds: int) -> dict[str, float]:
    """Best-round mean ms per steady-state block of every method on the mid-size model."""
    model = CausalWanModel(MID).eval()
    ae = RetrievalAutoencoder(AEConfig(spatial_h=MID_FRAME[1], spatial_w=MID_FRAME[2])).eval()
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, frames, *MID_FRAME, generator=g)
    prompt = torch.randn(1, MID.text_len, MID.text_dim, generator=g)
    means: dict[str, list[float]] = {m: [] for m in METHODS}
    for r in range(rounds):
        for method in METHODS:
            cfg = RolloutConfig(method=method, compression_method="ae")
            policy = build_context_method(cfg, lambda: TopKRetrieval(EncoderDescriptor(ae), "ae")).policy
            draws = torch.Generator().manual_seed(1)
            result = generate(model, cfg, noise, prompt, lambda shape: torch.randn(shape, generator=draws), policy)
            ms = statistics.mean(result.ms_per_block[STEADY_FROM_BLOCK:])
            means[method].append(ms)
            print(f"round {r}: {method:12s} {ms:8.1f} ms/block")
    return {m: min(v) for m, v in means.items()}


class BytesWritten(TorchDispatchMode):
    """Sums the bytes of every tensor an operation writes (views write nothing; in-place copies write their source)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.is_view:
            return out
        if func is torch.ops.aten.index_copy_.default:
            written = [args[3]]
        else:
            written = out if isinstance(out, (tuple, list)) else [out]
        self.total += sum(t.numel() * t.element_size() for t in written if isinstance(t, torch.Tensor))
        return out


def full_size_bytes_per_block(method: str, blocks: int) -> float:
    """Mean bytes one layer's context policy writes per steady-state block, Wan2.1-1.3B, bf16, on `meta`."""
    cfg = model_preset("wan2.1-t2v-1.3b")
    nf = 3
    tokens = FULL_SIZE_GRID[0] * FULL_SIZE_GRID[1]
    meta, dtype = torch.device("meta"), torch.bfloat16
    geometry = CacheGeometry(1, 1, tokens, FULL_SIZE_GRID, cfg.num_heads, cfg.head_dim, blocks * nf, nf, meta, dtype)
    rcfg = RolloutConfig(method=method, compression_method="random")
    rope = Rope3D(cfg.head_dim, cfg.rope_max_positions, meta)
    policy = build_context_method(rcfg, RandomRetrieval).policy(PolicySetup(geometry, rope, 0))
    qkv = torch.empty(1, nf * tokens, cfg.num_heads, cfg.head_dim, device=meta, dtype=dtype)
    x0 = torch.empty(1, nf, cfg.in_dim, 2 * FULL_SIZE_GRID[0], 2 * FULL_SIZE_GRID[1], device=meta, dtype=dtype)
    written = []
    for block in PromptSchedule.single("").blocks(blocks * nf, nf):
        with BytesWritten() as counter:
            context = policy.begin_block(block)
            for source in context.sources:
                source.keys_values(0, qkv, qkv)
            policy.end_block(block, context, x0, BlockKV([qkv], [qkv], [qkv]))
        written.append(counter.total)
    return statistics.mean(written[STEADY_FROM_BLOCK:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=30, help="latent frames of the mid-size rollouts (> 24)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds over the methods")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--skip-timing", action="store_true", help="only the full-size byte counts")
    args = parser.parse_args()
    if args.frames <= 3 * STEADY_FROM_BLOCK or args.frames % 3:
        parser.error(f"--frames must be a multiple of 3 above {3 * STEADY_FROM_BLOCK}")
    if args.threads:
        torch.set_num_threads(args.threads)
    layers = model_preset("wan2.1-t2v-1.3b").num_layers
    figures: dict = {"threads": torch.get_num_threads(), "frames": args.frames, "rounds": args.rounds}
    per_layer = {m: full_size_bytes_per_block(m, blocks=STEADY_FROM_BLOCK + 2) for m in METHODS}
    for method in METHODS:
        extra = (per_layer[method] - per_layer["native"]) * layers
        figures[f"{method}_extra_bytes_per_block_full_size"] = int(extra)
        print(f"full size, bf16, {layers} layers: {method:12s} writes {per_layer[method] * layers / 1e9:8.3f} GB per block "
              f"({extra / 1e9:+.3f} GB vs native)")
    if not args.skip_timing:
        ms = time_methods(args.frames, args.rounds)
        for method in METHODS:
            figures[f"{method}_ms_per_block"] = round(ms[method], 1)
            figures[f"{method}_over_native"] = round(ms[method] / ms["native"], 3)
            print(f"mid-size model, blocks {STEADY_FROM_BLOCK}..{args.frames // 3 - 1}: {method:12s} {ms[method]:8.1f} ms/block "
                  f"(x{figures[f'{method}_over_native']} native)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
