"""Retrieval-memory costs: descriptor encoding, top-K search, KV bytes, and native vs latentmem speed.

    python benchmarks/bench_retrieval.py [--frames 60] [--repeats 20] [--rounds 2]

Prints (CPU, fp32 unless stated):
  1. ms to encode one block of 3 latent frames [16, 60, 104] with the paper's AE
     (hidden [64, 128, 256], 1024-d; random weights: cost does not depend on them);
  2. ms for cosine top-K (K 6, R 5) over 480 bank entries;
  3. bytes of KV gathered per retrieving block and bytes banked per frame for the full-size
     Wan2.1-1.3B model in bf16, read off tensors the HistoryBank actually allocates;
  4. ms per block of `native` vs `latentmem` on a mid-size model over a rollout (mean over the
     blocks in which latentmem retrieves, best of alternating rounds), and the number of KV
     gathers per retrieving block.
The last line is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from ae.model import AEConfig, RetrievalAutoencoder
from pipeline.descriptors import EncoderDescriptor
from pipeline.bank_storage import MemoryTier
from pipeline.history_bank import HistoryBank
from pipeline.build import build_context_method
from pipeline.retrieval import TopKRetrieval, select_top_k
from pipeline.generation_config import GenerationConfig
from pipeline.rollout import gaussian_noise, generate
from pipeline.rollout_config import ModelKwargs, RolloutConfig
from wan.geometry import LatentGeometry
from wan.model import CausalWanModel
from wan.model_config import WanModelConfig, model_preset


def timed_ms(fn, repeats: int) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


@torch.no_grad()
def encode_block_ms(repeats: int) -> float:
    ae = RetrievalAutoencoder(AEConfig()).eval()
    block = torch.randn(1, 3, 16, 60, 104)
    descriptor = EncoderDescriptor(ae)
    return timed_ms(lambda: descriptor(block), repeats)


def top_k_ms(repeats: int) -> float:
    pool = torch.randn(1, 480, 1024)
    query = torch.randn(1, 1024)
    return timed_ms(lambda: select_top_k(query, pool, recent_exclude=5, k=6), repeats)


def full_size_kv_bytes(k: int = 6) -> tuple[int, int]:
    """(bytes gathered per retrieving block, bytes banked per frame) for Wan2.1-1.3B in bf16."""
    full = GenerationConfig()  # the defaults: Wan2.1-1.3B at 480x832
    cfg = model_preset(full.model_preset)
    tokens = LatentGeometry.of(cfg, full.latent_height, full.latent_width).tokens_per_frame
    # on the meta device nothing is allocated: the bank's own shapes, no 1.7 GB of host memory
    bank = HistoryBank(cfg.num_layers, 1, tokens, cfg.num_heads, cfg.head_dim, MemoryTier("meta"), torch.bfloat16, "meta")
    kv = torch.empty(cfg.num_layers, 1, k, tokens, cfg.num_heads, cfg.head_dim, dtype=torch.bfloat16, device="meta")
    bank.add(list(range(k)), kv, kv, None)
    retrieved = bank.gather(torch.arange(k).unsqueeze(0), torch.bfloat16)
    gathered = retrieved.k.numel() * retrieved.k.element_size() + retrieved.v.numel() * retrieved.v.element_size()
    return gathered, bank.bytes_per_frame()


def rollout(model, cfg: RolloutConfig, frames: int, ae):
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, frames, 16, 30, 52, generator=g)
    prompt = torch.randn(1, 16, model.cfg.text_dim, generator=g)
    policy = build_context_method(cfg, lambda: TopKRetrieval(EncoderDescriptor(ae), "ae")).policy
    return generate(model, cfg, noise, prompt, gaussian_noise(g), policy)


def compare_native_latentmem(model, ae, frames: int, rounds: int) -> dict:
    """Alternate native and latentmem rollouts `rounds` times; per method, the best round's mean ms over
    the blocks in which latentmem retrieves (the same blocks for both: full window, equal attention size)."""
    native_cfg = RolloutConfig()
    latentmem_cfg = RolloutConfig(method="latentmem", model_kwargs=ModelKwargs(compression_method="ae"))
    native_means, latentmem_means = [], []
    for _ in range(rounds):
        native = rollout(model, native_cfg, frames, ae)
        mem = rollout(model, latentmem_cfg, frames, ae)
        log = mem.extras["retrieval_log"]
        blocks = [entry["block_start_frame"] // latentmem_cfg.num_frame_per_block for entry in log]
        native_means.append(statistics.mean(native.ms_per_block[b] for b in blocks))
        latentmem_means.append(statistics.mean(mem.ms_per_block[b] for b in blocks))
    return {"native_ms": min(native_means), "latentmem_ms": min(latentmem_means), "gathers": mem.extras["kv_gathers"],
            "retrieving_blocks": len(blocks)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60, help="latent frames of the mid-size rollouts")
    parser.add_argument("--repeats", type=int, default=20, help="repeats of the micro-benchmarks")
    parser.add_argument("--rounds", type=int, default=2, help="alternating native / latentmem rollouts per method")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    figures = {}
    figures["ae_encode_ms_per_block_of_3"] = round(encode_block_ms(max(3, args.repeats // 4)), 2)
    print(f"AE encode, 3 frames [16, 60, 104], hidden [64,128,256], 1024-d: {figures['ae_encode_ms_per_block_of_3']:.2f} ms")
    figures["topk_ms_480_entries"] = round(top_k_ms(args.repeats * 10), 4)
    print(f"cosine top-6 over 480 entries (1024-d), recency guard 5: {figures['topk_ms_480_entries']:.4f} ms")
    gathered, banked = full_size_kv_bytes()
    figures["full_size_kv_bytes_gathered_per_block"] = gathered
    figures["full_size_kv_bytes_banked_per_frame"] = banked
    print(f"full size (bf16): KV gathered per retrieving block {gathered / 1e6:.1f} MB, banked per frame {banked / 1e6:.1f} MB")

    mid = WanModelConfig(dim=512, ffn_dim=2048, freq_dim=256, text_dim=512, text_len=16, num_heads=8, num_layers=8)
    model = CausalWanModel(mid).eval()
    ae = RetrievalAutoencoder(AEConfig(spatial_h=30, spatial_w=52)).eval()
    timing = compare_native_latentmem(model, ae, args.frames, args.rounds)
    native_ms, mem_ms = timing["native_ms"], timing["latentmem_ms"]
    gathers, retrieving_blocks = timing["gathers"], timing["retrieving_blocks"]
    figures["mid_native_ms_per_block"] = round(native_ms, 1)
    figures["mid_latentmem_ms_per_block"] = round(mem_ms, 1)
    figures["latentmem_over_native"] = round(mem_ms / native_ms, 3)
    figures["kv_gathers_per_block"] = gathers / max(retrieving_blocks, 1)
    print(
        f"mid-size model (dim 512, 8 layers, frame [16, 30, 52], {args.frames} frames), mean over the "
        f"{retrieving_blocks} retrieving blocks: native {native_ms:.1f} ms/block, latentmem {mem_ms:.1f} ms/block (x{figures['latentmem_over_native']}), "
        f"{gathers} KV gathers over {retrieving_blocks} retrieving blocks"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
