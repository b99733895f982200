"""Cost of each context method relative to native: ms per block and extra bytes moved per block.

    python benchmarks/bench_methods.py [--rounds 3] [--threads 0] [--skip-timing]

1. ms per block on the mid-size CPU model (dim 512, 8 layers, 8 heads, text_len 16, latent frames
   [16, 30, 52]; random weights, fp32), every method on the same noise and prompt. One rollout per
   method is brought to its steady state (block 8: latentmem retrieves K = 6 frames, Deep Forcing
   compresses every block, the window is full) with one denoising call per block, then the methods
   take turns in rounds (native, latentmem, infrope, deepforcing, native, ...), one full block (4
   denoising calls + recache) each; per method the mean over the rounds, ratios to native.
   latentmem uses the paper-size retrieval AE (random weights).
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
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ae.model import AEConfig, RetrievalAutoencoder
from pipeline.build import build_context_method
from pipeline.context.policy import CacheGeometry, PolicySetup
from pipeline.descriptors import EncoderDescriptor
from pipeline.prompt_schedule import Block, PromptSchedule
from pipeline.retrieval import RandomRetrieval, TopKRetrieval
from pipeline.rollout import CausalRollout
from pipeline.rollout_config import METHODS, ModelKwargs, RolloutConfig
from wan.block_attention import BlockKV
from wan.model import CausalWanModel
from wan.model_config import WanModelConfig, model_preset
from wan.rope import Rope3D

MID = WanModelConfig(dim=512, ffn_dim=2048, freq_dim=256, text_dim=512, text_len=16, num_heads=8, num_layers=8)
MID_FRAME = (16, 30, 52)
FULL_SIZE_GRID = (30, 52)  # 480x832 video -> latent 60x104 -> patch grid 30x52
STEADY_FROM_BLOCK = 8  # latentmem retrieves its full K from block 8 on


@torch.no_grad()
def warm_up(rollout: CausalRollout, blocks: list[Block], noise: torch.Tensor, draw) -> None:
    """Fill a rollout's state up to its steady state cheaply: one denoising call + the recache per block
    (the cost of later blocks does not depend on the cached values)."""
    for block in blocks:
        attn = rollout.begin_block(block)
        x = noise[:, block.frames[0] : block.frames[-1] + 1]
        x0 = rollout.predict_x0(attn, x, 1000.0)
        _, kv = rollout.recache(attn, x0, draw)
        rollout.end_block(block, attn, x0, kv)


@torch.no_grad()
def time_block(rollout: CausalRollout, block: Block, noise: torch.Tensor, draw) -> float:
    """ms of one full block: context, N denoising calls, recache, write-back."""
    start = time.perf_counter()
    rollout.run_block(block, noise[:, block.frames[0] : block.frames[-1] + 1], draw)
    return (time.perf_counter() - start) * 1000


def time_methods(rounds: int) -> dict[str, float]:
    """Mean ms per steady-state block of every method on the mid-size model: one rollout per method is
    warmed up to block STEADY_FROM_BLOCK, then the methods take turns, one block each per round."""
    model = CausalWanModel(MID).eval()
    ae = RetrievalAutoencoder(AEConfig(spatial_h=MID_FRAME[1], spatial_w=MID_FRAME[2])).eval()
    g = torch.Generator().manual_seed(0)
    num_frames = 3 * (STEADY_FROM_BLOCK + rounds)
    noise = torch.randn(1, num_frames, *MID_FRAME, generator=g)
    prompt = torch.randn(1, MID.text_len, MID.text_dim, generator=g)
    blocks = PromptSchedule.single("").blocks(num_frames, 3)
    draw = lambda shape: torch.randn(shape, generator=g)  # noqa: E731 (values do not affect the cost)
    rollouts = {}
    for method in METHODS:
        cfg = RolloutConfig(method=method, model_kwargs=ModelKwargs(compression_method="ae"))
        policy = build_context_method(cfg, lambda: TopKRetrieval(EncoderDescriptor(ae), "ae")).policy
        rollouts[method] = CausalRollout(model, cfg, policy, [prompt], MID_FRAME, num_frames)
        warm_up(rollouts[method], blocks[:STEADY_FROM_BLOCK], noise, draw)
        print(f"{method}: warmed up to block {STEADY_FROM_BLOCK}", flush=True)
    ms: dict[str, list[float]] = {m: [] for m in METHODS}
    for r in range(rounds):
        for method in METHODS:
            ms[method].append(time_block(rollouts[method], blocks[STEADY_FROM_BLOCK + r], noise, draw))
        print(f"round {r}: " + ", ".join(f"{m} {ms[m][-1]:.0f} ms" for m in METHODS), flush=True)
    return {m: statistics.mean(v) for m, v in ms.items()}


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


def no_clean_pass(context, x0, scene):
    raise RuntimeError("this benchmark has one prompt: no policy recomputes cached keys")


def full_size_bytes_per_block(method: str, blocks: int) -> float:
    """Mean bytes one layer's context policy writes per steady-state block, Wan2.1-1.3B, bf16, on `meta`."""
    cfg = model_preset("wan2.1-t2v-1.3b")
    nf = 3
    tokens = FULL_SIZE_GRID[0] * FULL_SIZE_GRID[1]
    meta, dtype = torch.device("meta"), torch.bfloat16
    geometry = CacheGeometry(1, 1, tokens, FULL_SIZE_GRID, cfg.num_heads, cfg.head_dim, blocks * nf, nf, meta, dtype)
    # latentmem: random retrieval, its bank on `meta` too, gathered at the block's start (in this thread, where
    # the counter sees it; a prefetch would read on the bank's reader thread)
    latentmem = dict(memory_device="meta", memory_prefetch=False) if method == "latentmem" else {}
    rcfg = RolloutConfig(method=method, model_kwargs=ModelKwargs(compression_method="random", **latentmem))
    rope = Rope3D(cfg.head_dim, cfg.rope_max_positions, meta)
    policy = build_context_method(rcfg, RandomRetrieval).policy(PolicySetup(geometry, rope, 0, no_clean_pass))
    qkv = torch.empty(1, nf * tokens, cfg.num_heads, cfg.head_dim, device=meta, dtype=dtype)
    x0 = torch.empty(1, nf, cfg.in_dim, 2 * FULL_SIZE_GRID[0], 2 * FULL_SIZE_GRID[1], device=meta, dtype=dtype)
    written = []
    for block in PromptSchedule.single("").blocks(blocks * nf, nf):
        with BytesWritten() as counter:
            context = policy.begin_block(block)
            for source in context.sources:
                source.keys_values(0, qkv, qkv)
            policy.before_recache(context, x0)
            policy.end_block(block, context, x0, BlockKV([qkv], [qkv], [qkv]))
        written.append(counter.total)
    return statistics.mean(written[STEADY_FROM_BLOCK:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds over the methods (timed blocks per method)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--skip-timing", action="store_true", help="only the full-size byte counts")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    layers = model_preset("wan2.1-t2v-1.3b").num_layers
    figures: dict = {"threads": torch.get_num_threads(), "rounds": args.rounds}
    per_layer = {m: full_size_bytes_per_block(m, blocks=STEADY_FROM_BLOCK + 2) for m in METHODS}
    for method in METHODS:
        extra = (per_layer[method] - per_layer["native"]) * layers
        figures[f"{method}_extra_bytes_per_block_full_size"] = int(extra)
        print(f"full size, bf16, {layers} layers: {method:12s} writes {per_layer[method] * layers / 1e9:8.3f} GB per block "
              f"({extra / 1e9:+.3f} GB vs native)")
    if not args.skip_timing:
        ms = time_methods(args.rounds)
        for method in METHODS:
            figures[f"{method}_ms_per_block"] = round(ms[method], 1)
            figures[f"{method}_over_native"] = round(ms[method] / ms["native"], 3)
            print(f"mid-size model, steady state: {method:12s} {ms[method]:8.1f} ms/block "
                  f"(x{figures[f'{method}_over_native']} native)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
