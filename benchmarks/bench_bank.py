"""The bounded, tiered history bank: memory, retrieval agreement under a budget, speed, fp8 accuracy.

    python benchmarks/bench_bank.py [--rounds 2] [--mid-frames 45] [--demo-frames 1200] [--skip-demo]
    python benchmarks/bench_bank.py --full-size      # on a GPU only

Prints (CPU):
  1. peak resident memory of `bash inference.sh demo latentmem num_output_frames=N` without and with a
     memory budget, sampled over the run (every process of the launch), and the growth over the
     last half of the run (flat once the bank is full);
  2. host memory the bank needs at full size (Wan2.1-1.3B, 480x832, 3-frame blocks, window 12) for
     30 s / 60 s / 120 s / 10 min per dtype, and with a 32 GB budget, from the bank's own
     per-frame allocation size;
  3. retrieval agreement under a budget on the toy latent videos with revisits
     (toydatasets/make_toy_latents.py, avg-pool descriptors): the share of blocks whose top-K equals the
     unbounded bank's, the share of selected frames in common, and the revisit hit rate, per eviction
     policy and budget;
  4. on the mid-size model (dim 512, 8 layers, frame [16, 30, 52]), latentmem over native per block in
     one run (alternating rounds; blocks where a full K is retrieved, paired with the same blocks of
     native), prefetched vs plain loop bit-identity, and the fp8 bank's final-latent difference from a
     bf16 bank plus whether the retrieved indices change.
With --full-size (needs CUDA): Wan2.1-1.3B with random weights, end-to-end FPS of native and latentmem,
with and without prefetch, per bank tier. The last line is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import torch

from ae.model import AEConfig, RetrievalAutoencoder
from pipeline.bank_eviction import EVICTION_POLICIES
from pipeline.bank_storage import MemoryTier
from pipeline.descriptors import AvgPoolDescriptor, EncoderDescriptor
from pipeline.build import build_context_method
from pipeline.history_bank import HistoryBank, frame_bytes
from pipeline.retrieval import TopKRetrieval
from pipeline.retrieval_memory import RetrievalMemory
from pipeline.rollout import generate
from pipeline.rollout_config import ModelKwargs, RolloutConfig
from toydatasets.make_toy_latents import ToyConfig, make_scene_bank, make_video
from wan.geometry import LatentGeometry
from wan.model import CausalWanModel
from wan.model_config import WanModelConfig, model_preset

ROOT = Path(__file__).resolve().parents[1]
MID = WanModelConfig(dim=512, ffn_dim=2048, freq_dim=256, text_dim=512, text_len=16, num_heads=8, num_layers=8)
MID_FRAME = (16, 30, 52)
FULL_SIZE_HW = (60, 104)  # 480x832 through the 8x VAE
LATENT_FPS = 4  # 16 video fps / VAE temporal stride 4
GB = 1e9


# ---- 1. peak resident memory of the demo -------------------------------------------------------

def tree_rss(root: int) -> int:
    """Resident bytes of `root` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def demo_peak_rss(frames: int, overrides: list[str], out: Path) -> dict:
    cmd = ["bash", "inference.sh", "demo", "latentmem", f"num_output_frames={frames}", f"output_folder={out}", *overrides]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    samples: list[tuple[float, int]] = []
    start = time.perf_counter()

    def sample() -> None:
        while proc.poll() is None:
            samples.append((time.perf_counter() - start, tree_rss(proc.pid)))
            time.sleep(0.25)

    watcher = threading.Thread(target=sample)
    watcher.start()
    output = proc.communicate()[0]
    watcher.join()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{output[-3000:]}")
    # the generation phase: samples while the rollout runs (the VAE decode follows it)
    rss = [r for _, r in samples]
    half = rss[len(rss) // 2 :]
    log = json.loads(next(out.glob("*.retrieval.json")).read_text())
    return {"peak_rss_mb": round(max(rss) / 1e6, 1), "growth_last_half_mb": round((max(half) - half[0]) / 1e6, 1),
            "seconds": round(samples[-1][0], 1), "history_bank": log["history_bank"],
            "evicted_frames": sum(len(b["evicted_frames"]) for b in log["blocks"])}


# ---- 2. full-size memory table -----------------------------------------------------------------

def memory_table(budget_gb: float = 32.0) -> dict:
    cfg, rcfg = model_preset("wan2.1-t2v-1.3b"), RolloutConfig()
    tokens = LatentGeometry.of(cfg, *FULL_SIZE_HW).tokens_per_frame
    table = {}
    for seconds in (30, 60, 120, 600):
        banked = seconds * LATENT_FPS - rcfg.model_kwargs.local_attn_size
        row = {}
        for dtype in (torch.float32, torch.bfloat16, torch.float8_e4m3fn):
            per_frame = frame_bytes(cfg.num_layers, 1, tokens, cfg.num_heads, cfg.head_dim, dtype)
            name = str(dtype).removeprefix("torch.")
            row[name] = round(banked * per_frame / GB, 1)
            row[f"{name}_budget{budget_gb:g}"] = round(min(banked, int(budget_gb * GB // per_frame)) * per_frame / GB, 1)
        table[f"{seconds}s"] = row
    return table


# ---- 3. retrieval agreement under a budget on toy videos -----------------------------------------

def toy_selections(video: torch.Tensor, budget_frames: int | None, policy: str, rcfg: RolloutConfig) -> list[list[int]]:
    """Selected global frames of every retrieving block of Algorithm 1's bookkeeping on `video` ([T, C, H, W])."""
    mk = rcfg.model_kwargs
    bank = HistoryBank(1, 1, 1, 1, 1, MemoryTier("cpu"), torch.float32, "cpu", max_frames=budget_frames,
                       eviction=EVICTION_POLICIES[policy](), recent_guard=mk.recent_exclude)
    memory = RetrievalMemory(bank, TopKRetrieval(AvgPoolDescriptor(), "avg_pool"), mk.memory_size, mk.recent_exclude)
    nf, window, out = rcfg.num_frame_per_block, mk.local_attn_size, []
    for first in range(0, video.shape[0] - nf + 1, nf):
        if memory.retrieve(first, torch.float32) is not None:
            out.append(memory.log[-1]["selected_frames"][0])
        memory.index(video[None, first : first + nf])
        leaving = [f for f in range(first + nf - window, first + 2 * nf - window) if f >= mk.sink_size]
        if leaving:
            memory.bank_frames(leaving, torch.zeros(1, 1, len(leaving), 1, 1, 1), torch.zeros(1, 1, len(leaving), 1, 1, 1))
    return out


def toy_agreement(num_videos: int, frames: int, budgets: list[int]) -> dict:
    tcfg = ToyConfig(num_videos=num_videos, frames=frames)
    scenes = make_scene_bank(tcfg)
    rcfg = RolloutConfig(method="latentmem")
    videos = [make_video(tcfg, scenes, i) for i in range(num_videos)]
    reference = [toy_selections(v, None, "oldest", rcfg) for v, _ in videos]
    figures = {"unbounded": {"revisit_hit_rate": revisit_hits(videos, reference, rcfg)}}
    for budget in budgets:
        for policy in EVICTION_POLICIES:
            runs = [toy_selections(v, budget, policy, rcfg) for v, _ in videos]
            same = [a == b for ref, run in zip(reference, runs) for a, b in zip(ref, run)]
            common = [len(set(a) & set(b)) / len(a) for ref, run in zip(reference, runs) for a, b in zip(ref, run)]
            figures[f"{policy}_{budget}"] = {
                "same_top_k": round(statistics.mean(same), 3), "frames_in_common": round(statistics.mean(common), 3),
                "revisit_hit_rate": revisit_hits(videos, runs, rcfg),
            }
    return figures


def revisit_hits(videos, selections, rcfg: RolloutConfig) -> float:
    """Share of retrieving blocks whose query scene was shown in an earlier, already banked segment and
    for which at least one retrieved frame shows that scene."""
    hits, total = 0, 0
    nf = rcfg.num_frame_per_block
    for (_, ids), sel in zip(videos, selections):
        first_block = len(ids) // nf - len(sel)
        for j, picks in enumerate(sel):
            query = (first_block + j) * nf - 1
            banked_until = query + 1 - rcfg.model_kwargs.local_attn_size - rcfg.model_kwargs.recent_exclude
            start = query
            while start > 0 and ids[start - 1] == ids[query]:
                start -= 1
            if ids[query] not in ids[: min(start, max(banked_until, 0))]:
                continue  # not a revisit of anything retrievable
            total += 1
            hits += any(ids[f] == ids[query] for f in picks)
    return round(hits / max(total, 1), 3)


# ---- 4. mid-size speed, prefetch identity, fp8 accuracy ----------------------------------------

def context_policy(cfg: RolloutConfig, descriptor):
    """The policy of `cfg`'s method; `descriptor` feeds latentmem's retrieval ("ae": the retrieval encoder)."""
    return build_context_method(cfg, lambda: TopKRetrieval(descriptor, "ae")).policy


def mid_rollout(model, cfg: RolloutConfig, frames: int, descriptor):
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, frames, *MID_FRAME, generator=g)
    prompt = torch.randn(1, MID.text_len, MID.text_dim, generator=g)
    return generate(model, cfg, noise, prompt, lambda shape: torch.randn(shape, generator=g), context_policy(cfg, descriptor))


def retrievals(result) -> list[dict]:
    """Retrieval entries of the blocks that retrieved, from the context log."""
    return [e["retrieval"] for e in result.context_log if e.get("retrieval") is not None]


def steady_blocks(result, cfg: RolloutConfig) -> list[int]:
    """Blocks that retrieve a full K (the attention size is then the same as native's)."""
    return [e["block_start_frame"] // cfg.num_frame_per_block for e in retrievals(result)
            if len(e["selected_pool_indices"][0]) == cfg.model_kwargs.memory_size]


def mid_size(frames: int, rounds: int) -> dict:
    torch.manual_seed(0)
    model = CausalWanModel(MID).eval()
    descriptor = EncoderDescriptor(RetrievalAutoencoder(AEConfig(spatial_h=MID_FRAME[1], spatial_w=MID_FRAME[2])).eval())
    native_cfg, mem_cfg = RolloutConfig(), RolloutConfig(method="latentmem")
    ratios, native_ms, mem_ms = [], [], []
    for _ in range(rounds):
        native = mid_rollout(model, native_cfg, frames, None)
        mem = mid_rollout(model, mem_cfg, frames, descriptor)
        blocks = steady_blocks(mem, mem_cfg)
        n = statistics.mean(native.ms_per_block[b] for b in blocks)
        m = statistics.mean(mem.ms_per_block[b] for b in blocks)
        native_ms.append(n)
        mem_ms.append(m)
        ratios.append(m / n)
    plain = mid_rollout(model, RolloutConfig(method="latentmem", model_kwargs=ModelKwargs(memory_prefetch=False)), frames, descriptor)
    bf16 = mid_rollout(model, RolloutConfig(method="latentmem", model_kwargs=ModelKwargs(memory_dtype="bfloat16")), frames, descriptor)
    fp8 = mid_rollout(model, RolloutConfig(method="latentmem", model_kwargs=ModelKwargs(memory_dtype="float8_e4m3fn")), frames, descriptor)
    diff = (fp8.latents - bf16.latents).abs()
    picks = lambda r: [e["selected_pool_indices"] for e in retrievals(r)]  # noqa: E731
    changed = sum(a != b for a, b in zip(picks(fp8), picks(bf16)))
    return {
        "frames": frames, "steady_blocks": len(blocks), "rounds": rounds,
        "native_ms_per_block": round(min(native_ms), 1), "latentmem_ms_per_block": round(min(mem_ms), 1),
        "latentmem_over_native_per_round": [round(r, 3) for r in ratios],
        "latentmem_over_native_steady": round(min(mem_ms) / min(native_ms), 3),
        "prefetch_bit_identical": torch.equal(plain.latents, mem.latents) and plain.context_log == mem.context_log,
        "fp8_vs_bf16_max_abs": float(diff.max()), "fp8_vs_bf16_mean_abs": float(diff.mean()),
        "latent_std": float(bf16.latents.std()),
        "fp8_blocks_with_other_indices": changed, "retrieving_blocks": len(retrievals(fp8)),
    }


# ---- GPU: full size ----------------------------------------------------------------------------

def full_size(frames: int) -> dict:
    device = torch.device("cuda")
    cfg = model_preset("wan2.1-t2v-1.3b")
    model = CausalWanModel(cfg).to(device, torch.bfloat16).eval()
    descriptor = EncoderDescriptor(RetrievalAutoencoder(AEConfig()).to(device).eval())
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, frames, 16, *FULL_SIZE_HW, generator=g)
    prompt = torch.randn(1, cfg.text_len, cfg.text_dim, generator=g)
    out = {}
    with tempfile.TemporaryDirectory(dir=ROOT) as folder:
        settings = {"native": RolloutConfig()}
        for tier in ("cuda", "cpu", "disk"):
            for prefetch in (True, False):
                settings[f"latentmem_{tier}_{'prefetch' if prefetch else 'plain'}"] = RolloutConfig(method="latentmem", model_kwargs=ModelKwargs(
                    memory_device=tier, memory_prefetch=prefetch,
                    memory_folder=folder if tier == "disk" else None))
        for name, rcfg in settings.items():
            start = time.perf_counter()
            generate(model, rcfg, noise, prompt, lambda shape: torch.randn(shape, generator=g), context_policy(rcfg, descriptor))
            torch.cuda.synchronize()
            out[f"{name}_latent_fps"] = round(frames / (time.perf_counter() - start), 2)
            print(f"{name}: {out[f'{name}_latent_fps']} latent frames/s", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="alternating native / latentmem rounds on the mid-size model")
    parser.add_argument("--mid-frames", type=int, default=45, help="latent frames of the mid-size rollouts")
    parser.add_argument("--demo-frames", type=int, default=1200, help="latent frames of the demo runs (peak RSS)")
    parser.add_argument("--demo-budget-gb", type=float, default=0.002, help="memory_budget_gb of the budgeted demo run")
    parser.add_argument("--skip-demo", action="store_true", help="skip the two demo runs (figure 1)")
    parser.add_argument("--skip-toy", action="store_true", help="skip the toy retrieval agreement (figure 3)")
    parser.add_argument("--skip-mid", action="store_true", help="skip the mid-size model (figure 4)")
    parser.add_argument("--toy-videos", type=int, default=8)
    parser.add_argument("--toy-frames", type=int, default=240)
    parser.add_argument("--full-size", action="store_true", help="GPU only: Wan2.1-1.3B, random weights, FPS per tier")
    parser.add_argument("--full-size-frames", type=int, default=120)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = parser.parse_args()
    if args.full_size and not torch.cuda.is_available():
        parser.error("--full-size builds Wan2.1-1.3B and times it on a GPU; no CUDA device is available here. "
                     "Run it on a GPU machine, or drop --full-size for the CPU figures.")
    if args.threads:
        torch.set_num_threads(args.threads)
    figures: dict = {"threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                     "note": "CPU shared with other jobs while measured"}
    if args.full_size:
        figures["full_size"] = full_size(args.full_size_frames)
        print(json.dumps(figures))
        return

    if not args.skip_demo:
        with tempfile.TemporaryDirectory() as tmp:
            unbounded = demo_peak_rss(args.demo_frames, [], Path(tmp) / "unbounded")
            budget = demo_peak_rss(args.demo_frames, [f"model_kwargs.memory_budget_gb={args.demo_budget_gb}"], Path(tmp) / "budget")
        figures["demo_unbounded"], figures["demo_budget"] = unbounded, budget
        for name, f in (("no budget", unbounded), (f"budget {args.demo_budget_gb} GB", budget)):
            print(f"demo latentmem {args.demo_frames} frames, {name}: peak RSS {f['peak_rss_mb']} MB, growth over the last half "
                  f"{f['growth_last_half_mb']} MB, {f['evicted_frames']} evictions, {f['seconds']} s; {f['history_bank']}")

    table = memory_table()
    figures["full_size_bank_gb"] = table
    print("full-size history bank (GB of host memory; Wan2.1-1.3B 480x832, window 12, 4 latent frames/s):")
    for length, row in table.items():
        print(f"  {length:>5}: " + ", ".join(f"{k} {v}" for k, v in row.items()))

    if not args.skip_toy:
        report_toy(figures, args)
    if not args.skip_mid:
        report_mid(figures, args)
    # null: not measured in this run (skipped)
    figures["budget_held"] = None if args.skip_demo else (
        figures["demo_budget"]["growth_last_half_mb"] < 0.5 * max(figures["demo_unbounded"]["growth_last_half_mb"], 1.0))
    figures["prefetch_bit_identical"] = None if args.skip_mid else figures["mid"]["prefetch_bit_identical"]
    figures["latentmem_over_native_steady"] = None if args.skip_mid else figures["mid"]["latentmem_over_native_steady"]
    print(json.dumps(figures))


def report_toy(figures: dict, args: argparse.Namespace) -> None:
    toy = toy_agreement(args.toy_videos, args.toy_frames, budgets=[12, 24, 48])
    figures["toy_agreement"] = toy
    print(f"toy revisits ({args.toy_videos} videos x {args.toy_frames} frames, avg-pool, K 6, R 5): unbounded bank "
          f"revisit hit rate {toy['unbounded']['revisit_hit_rate']}")
    for name, f in toy.items():
        if name != "unbounded":
            print(f"  {name:>14} frames: same top-K {f['same_top_k']}, frames in common {f['frames_in_common']}, "
                  f"revisit hit rate {f['revisit_hit_rate']}")


def report_mid(figures: dict, args: argparse.Namespace) -> None:
    mid = mid_size(args.mid_frames, args.rounds)
    figures["mid"] = mid
    print(f"mid-size ({args.mid_frames} frames, {mid['steady_blocks']} full-K blocks): native {mid['native_ms_per_block']} ms/block, "
          f"latentmem {mid['latentmem_ms_per_block']} ms/block, ratio {mid['latentmem_over_native_steady']} "
          f"(per round {mid['latentmem_over_native_per_round']}); prefetch bit-identical {mid['prefetch_bit_identical']}")
    print(f"fp8 bank vs bf16 bank: final latents max |diff| {mid['fp8_vs_bf16_max_abs']:.3e}, mean {mid['fp8_vs_bf16_mean_abs']:.3e} "
          f"(latent std {mid['latent_std']:.3f}); {mid['fp8_blocks_with_other_indices']} of {mid['retrieving_blocks']} blocks retrieved other indices")


if __name__ == "__main__":
    main()
