"""The bounded, tiered history bank: memory, retrieval agreement under a budget, speed, fp8 accuracy.

    python benchmarks/bench_bank.py                      # a few minutes on 2 CPU cores (small model, short launches)
    python benchmarks/bench_bank.py --model mid --frames 45 --launch-frames 1200   # the issue's full measurement
    python benchmarks/bench_bank.py --full-size          # on a GPU only

Prints (CPU):
  1. memory of the demo (`configs/demo_latentmem.yaml`): (a) per block, in this process, the resident
     memory after each block of a `--demo-frames` rollout of native, latentmem without a budget and
     latentmem with `--demo-budget-gb`; after the budgeted bank is full, each run's growth per frame
     (least-squares slope). What legitimately grows with the video in every method is native's slope:
     the output latents (allocated for the whole video, paged in as frames are written) and the
     context log (native's run stops at 1023 frames, where its absolute RoPE positions end); latentmem
     adds its retrieval log and one descriptor per frame. `budget_held`: the
     budgeted run grows per frame by at most native's slope plus a quarter of the bank's own bytes per
     frame (an unbounded bank grows by all of them). (b) the peak resident memory of the whole launch
     `bash inference.sh demo latentmem num_output_frames=N` (every process of it, the VAE decode and
     ffmpeg included) with and without the budget;
  2. host memory the bank needs at full size (Wan2.1-1.3B, 480x832, 3-frame blocks, window 12) for
     30 s / 60 s / 120 s / 10 min per dtype, and with a 32 GB budget, from the bank's own
     per-frame allocation size;
  3. retrieval agreement under a budget on the toy latent videos with revisits
     (toydatasets/make_toy_latents.py, avg-pool descriptors): the share of blocks whose top-K equals the
     unbounded bank's, the share of selected frames in common, and the revisit hit rate, per eviction
     policy and budget;
  4. on the `--model` (small: dim 256, 4 layers, frame [16, 16, 26]; mid: dim 512, 8 layers, frame
     [16, 30, 52]), native and latentmem rolled out in lockstep, block by block, alternating which goes
     first: latentmem over native on the blocks where a full K is retrieved, with the time latentmem
     spends per such block describing, banking, selecting and gathering; the prefetched vs plain loop
     bit-identity; the fp8 bank's final-latent difference from a bf16 bank and whether the retrieved
     indices change.
With --full-size (needs CUDA): Wan2.1-1.3B with random weights, end-to-end FPS of native and latentmem,
with and without prefetch, per bank tier. The last line is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import dataclasses
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
from inference_job.config import load_inference_config
from pipeline.bank_eviction import EVICTION_POLICIES
from pipeline.bank_storage import MemoryTier
from pipeline.build import build_components, build_context_method
from pipeline.descriptors import AvgPoolDescriptor, EncoderDescriptor
from pipeline.history_bank import HistoryBank, frame_bytes
from pipeline.prompt_schedule import PromptSchedule
from pipeline.retrieval import TopKRetrieval
from pipeline.retrieval_memory import RetrievalMemory
from pipeline.rollout import CausalRollout, NoiseSource, gaussian_noise, generate
from pipeline.rollout_config import ModelKwargs, RolloutConfig
from pipeline.sample import sample_video
from toydatasets.make_toy_latents import ToyConfig, make_scene_bank, make_video
from wan.geometry import LatentGeometry
from wan.model import CausalWanModel
from wan.model_config import WanModelConfig, model_preset

ROOT = Path(__file__).resolve().parents[1]
MODELS = {  # name -> (model config, latent frame [C, H, W])
    "small": (WanModelConfig(dim=256, ffn_dim=1024, freq_dim=256, text_dim=512, text_len=16, num_heads=4, num_layers=4), (16, 16, 26)),
    "mid": (WanModelConfig(dim=512, ffn_dim=2048, freq_dim=256, text_dim=512, text_len=16, num_heads=8, num_layers=8), (16, 30, 52)),
}
FULL_SIZE_HW = (60, 104)  # 480x832 through the 8x VAE
LATENT_FPS = 4  # 16 video fps / VAE temporal stride 4
GB = 1e9
DEMO_PROMPT = "A red fox trotting through fresh snow in a birch forest at sunrise."


# ---- 1. memory of the demo --------------------------------------------------------------------

def resident_bytes(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class ResidentPerBlock:
    """A context policy that records the process's resident memory after each block of the policy it wraps."""

    def __init__(self, policy):
        self.policy, self.rss = policy, []

    def __getattr__(self, name):
        return getattr(self.policy, name)

    def end_block(self, block, context, x0, kv) -> dict:
        out = self.policy.end_block(block, context, x0, kv)
        self.rss.append(resident_bytes())
        return out


def demo_rollout_rss(config: str, frames: int, overrides: list[str]) -> tuple[list[int], list[dict]]:
    """One demo video's rollout (the components `inference.sh demo` builds) -> (resident bytes after each
    block, context log)."""
    cfg = load_inference_config(config, [f"num_output_frames={frames}", f"prompts=[{DEMO_PROMPT}]", *overrides])
    parts = build_components(cfg, torch.device("cpu"), torch.float32, [DEMO_PROMPT])
    probes, factory = [], parts.method.policy

    def probed(setup):
        probes.append(ResidentPerBlock(factory(setup)))
        return probes[-1]

    parts = dataclasses.replace(parts, method=dataclasses.replace(parts.method, policy=probed))
    result = sample_video(DEMO_PROMPT, 0, cfg, parts, progress=False)
    return probes[0].rss, result.context_log


def slope(values: list[int]) -> float:
    """Least-squares slope of `values` per index."""
    n = len(values)
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    return sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values)) / sum((i - mean_x) ** 2 for i in range(n))


def demo_memory(frames: int, budget_gb: float) -> dict:
    latentmem = "configs/demo_latentmem.yaml"
    cfg = load_inference_config(latentmem, [])
    mcfg, nf = model_preset(cfg.model_preset), cfg.num_frame_per_block
    # native rotates keys at their absolute frame index: its videos end where the RoPE table does
    native_frames = min(frames, mcfg.rope_max_positions // nf * nf)
    runs = {"native": demo_rollout_rss("configs/demo_native.yaml", native_frames, []),
            "unbounded": demo_rollout_rss(latentmem, frames, []),
            "budget": demo_rollout_rss(latentmem, frames, [f"model_kwargs.memory_budget_gb={budget_gb}"])}
    log = runs["budget"][1]
    full = next(i for i, e in enumerate(log) if e.get("retrieval") and e["retrieval"]["evicted_frames"])
    tokens = LatentGeometry.of(mcfg, cfg.latent_height, cfg.latent_width).tokens_per_frame
    bank_frame = frame_bytes(mcfg.num_layers, 1, tokens, mcfg.num_heads, mcfg.head_dim, torch.float32)
    out = {"frames": frames, "native_frames": native_frames, "budget_gb": budget_gb, "bank_full_at_block": full, "blocks": len(log),
           "bank_bytes_per_frame": bank_frame,
           "latent_bytes_per_frame": mcfg.in_dim * cfg.latent_height * cfg.latent_width * 4,
           "max_banked": max(e["num_banked"] for e in log)}
    for name, (rss, _) in runs.items():
        out[name] = {"rss_mb_at_full": round(rss[full] / 1e6, 1), "rss_mb_end": round(rss[-1] / 1e6, 1),
                     "bytes_per_frame_after_full": round(slope(rss[full:]) / nf)}
    excess = out["budget"]["bytes_per_frame_after_full"] - out["native"]["bytes_per_frame_after_full"]
    out["budget_excess_bytes_per_frame"] = excess
    out["budget_held"] = excess <= 0.25 * bank_frame
    return out


def launch_peak_rss(frames: int, overrides: list[str], out: Path) -> dict:
    """Peak resident memory of `bash inference.sh demo latentmem` (one video), summed over every process of the launch."""
    cmd = ["bash", "inference.sh", "demo", "latentmem", f"num_output_frames={frames}", f"output_folder={out}",
           f"prompts=[{DEMO_PROMPT}]", *overrides]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    peak, start = 0, time.perf_counter()

    def sample() -> None:
        nonlocal peak
        while proc.poll() is None:
            peak = max(peak, tree_rss(proc.pid))
            time.sleep(0.25)

    watcher = threading.Thread(target=sample)
    watcher.start()
    output = proc.communicate()[0]
    watcher.join()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{output[-3000:]}")
    record = json.loads((out / "0000-0.json").read_text())
    return {"peak_rss_mb": round(peak / 1e6, 1), "seconds": round(time.perf_counter() - start, 1),
            "rollout_seconds": round(record["rollout_seconds"], 1), "decode_seconds": round(record["decode_seconds"], 1)}


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
            total += resident_bytes(pid)
        except OSError:
            pass
    return total


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


# ---- 4. speed, prefetch identity, fp8 accuracy ---------------------------------------------------

def context_policy(cfg: RolloutConfig, descriptor):
    """The policy of `cfg`'s method; `descriptor` feeds latentmem's retrieval ("ae": the retrieval encoder)."""
    return build_context_method(cfg, lambda: TopKRetrieval(descriptor, "ae")).policy


def model_inputs(mcfg: WanModelConfig, frame: tuple[int, int, int], frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, frames, *frame, generator=g), torch.randn(1, mcfg.text_len, mcfg.text_dim, generator=g)


def renoise_source(device: torch.device = torch.device("cpu"), seed: int = 1) -> NoiseSource:
    """Re-noising draws on the compute device (the rollout does not move them)."""
    return gaussian_noise(torch.Generator(device).manual_seed(seed))


def rollout(model, cfg: RolloutConfig, frame, frames: int, descriptor):
    noise, prompt = model_inputs(model.cfg, frame, frames)
    return generate(model, cfg, noise, prompt, renoise_source(), context_policy(cfg, descriptor))


class StepTimer:
    """Wall time of the latentmem policy's own steps per block (wrapping its memory's and bank's methods)."""

    STEPS = {"describe": ("memory", "index"), "bank": ("memory", "bank_frames"), "select+gather": ("memory", "retrieve"),
             "prefetch (select+gather)": ("memory", "prefetch")}

    def __init__(self, policy):
        self.ms: dict[str, dict[int, float]] = {name: {} for name in self.STEPS}
        self.block = 0
        for name, (owner, method) in self.STEPS.items():
            target = getattr(policy, owner)
            setattr(target, method, self._timed(name, getattr(target, method)))

    def _timed(self, name, fn):
        def run(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self.ms[name][self.block] = self.ms[name].get(self.block, 0.0) + (time.perf_counter() - start) * 1000
            return out
        return run


def lockstep(model, frame, frames: int, descriptor) -> dict:
    """native and latentmem rolled out block by block in one loop, alternating which runs first, so both see
    the same machine load. -> per method its ms per block and context log; latentmem's step timings."""
    noise, prompt = model_inputs(model.cfg, frame, frames)
    cfgs = {"native": RolloutConfig(), "latentmem": RolloutConfig(method="latentmem")}
    rollouts = {name: CausalRollout(model, cfg, context_policy(cfg, descriptor), [prompt], frame, frames)
                for name, cfg in cfgs.items()}
    renoise = {name: renoise_source() for name in cfgs}
    timer = StepTimer(rollouts["latentmem"].policy)
    ms = {name: [] for name in cfgs}
    try:
        for block in PromptSchedule.single("").blocks(frames, cfgs["native"].num_frame_per_block):
            timer.block = block.index
            for name in list(cfgs)[:: 1 if block.index % 2 == 0 else -1]:
                r, start = rollouts[name], time.perf_counter()
                r.run_block(block, noise[:, block.frames[0] : block.frames[-1] + 1], renoise[name])
                ms[name].append((time.perf_counter() - start) * 1000)
    finally:
        for r in rollouts.values():
            r.policy.close()
    return {"ms": ms, "log": rollouts["latentmem"].context_log, "steps": timer.ms}


def retrievals(log: list[dict]) -> list[dict]:
    """Retrieval entries of the blocks that retrieved, from a context log."""
    return [e["retrieval"] for e in log if e.get("retrieval") is not None]


def steady_blocks(log: list[dict], cfg: RolloutConfig) -> list[int]:
    """Blocks that retrieve a full K (the attention size is then the same as native's)."""
    return [e["block_start_frame"] // cfg.num_frame_per_block for e in retrievals(log)
            if len(e["selected_pool_indices"][0]) == cfg.model_kwargs.memory_size]


def speed_and_accuracy(model_name: str, frames: int, rounds: int) -> dict:
    mcfg, frame = MODELS[model_name]
    torch.manual_seed(0)
    model = CausalWanModel(mcfg).eval()
    descriptor = EncoderDescriptor(RetrievalAutoencoder(AEConfig(spatial_h=frame[1], spatial_w=frame[2])).eval())
    native_ms, mem_ms, steps = [], [], {}
    for _ in range(rounds):
        run = lockstep(model, frame, frames, descriptor)
        blocks = steady_blocks(run["log"], RolloutConfig(method="latentmem"))
        native_ms += [run["ms"]["native"][b] for b in blocks]
        mem_ms += [run["ms"]["latentmem"][b] for b in blocks]
        for name, per_block in run["steps"].items():
            steps.setdefault(name, []).extend(per_block.get(b, 0.0) for b in blocks)
    mem = lambda **kw: RolloutConfig(method="latentmem", model_kwargs=ModelKwargs(**kw))  # noqa: E731
    prefetched, plain = rollout(model, mem(), frame, frames, descriptor), rollout(model, mem(memory_prefetch=False), frame, frames, descriptor)
    bf16 = rollout(model, mem(memory_dtype="bfloat16"), frame, frames, descriptor)
    fp8 = rollout(model, mem(memory_dtype="float8_e4m3fn"), frame, frames, descriptor)
    diff = (fp8.latents - bf16.latents).abs()
    picks = lambda r: [e["selected_pool_indices"] for e in retrievals(r.context_log)]  # noqa: E731
    return {
        "model": model_name, "frames": frames, "rounds": rounds, "steady_blocks": len(native_ms),
        "native_ms_per_block": round(statistics.mean(native_ms), 1), "latentmem_ms_per_block": round(statistics.mean(mem_ms), 1),
        "latentmem_over_native_per_block": [round(m / n, 3) for m, n in zip(mem_ms, native_ms)],
        "latentmem_over_native_steady": round(sum(mem_ms) / sum(native_ms), 3),
        "latentmem_steps_ms_per_block": {name: round(statistics.mean(v), 1) for name, v in steps.items()},
        "prefetch_bit_identical": torch.equal(plain.latents, prefetched.latents) and plain.context_log == prefetched.context_log,
        "fp8_vs_bf16_max_abs": float(diff.max()), "fp8_vs_bf16_mean_abs": float(diff.mean()),
        "latent_std": float(bf16.latents.std()),
        "fp8_blocks_with_other_indices": sum(a != b for a, b in zip(picks(fp8), picks(bf16))),
        "retrieving_blocks": len(retrievals(fp8.context_log)),
    }


# ---- GPU: full size ----------------------------------------------------------------------------

def full_size(frames: int, budget_gb: float, device: torch.device, hw: tuple[int, int] = FULL_SIZE_HW,
              tiers: tuple[str, ...] = ("cuda", "cpu", "disk")) -> dict:
    """End-to-end latent frames per second of Wan2.1-1.3B (random weights, bf16 as inference runs it) for
    native and for latentmem on each bank tier (`budget_gb` each, so every tier holds the same bank), with and
    without prefetch."""
    cfg = model_preset("wan2.1-t2v-1.3b")
    dtype = torch.bfloat16
    model = CausalWanModel(cfg).to_inference_dtype(dtype).to(device).eval()
    descriptor = EncoderDescriptor(RetrievalAutoencoder(AEConfig(spatial_h=hw[0], spatial_w=hw[1])).to(device).eval())
    noise, prompt = model_inputs(cfg, (cfg.in_dim, *hw), frames)
    out = {"frames": frames, "budget_gb": budget_gb}
    with tempfile.TemporaryDirectory(dir=ROOT) as folder:
        settings = {"native": RolloutConfig()}
        for tier in tiers:
            for prefetch in (True, False):
                settings[f"latentmem_{tier}_{'prefetch' if prefetch else 'plain'}"] = RolloutConfig(method="latentmem", model_kwargs=ModelKwargs(
                    memory_device=tier, memory_prefetch=prefetch, memory_budget_gb=budget_gb,
                    memory_folder=folder if tier == "disk" else None))
        for name, rcfg in settings.items():
            rcfg.validate()
            start = time.perf_counter()
            generate(model, rcfg, noise, prompt, renoise_source(device), context_policy(rcfg, descriptor))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            out[f"{name}_latent_fps"] = round(frames / (time.perf_counter() - start), 3)
            print(f"{name}: {out[f'{name}_latent_fps']} latent frames/s", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=list(MODELS), default="small", help="model of figure 4 (mid: the issue's)")
    parser.add_argument("--frames", type=int, default=30, help="latent frames of the figure 4 rollouts (30: 2 full-K blocks)")
    parser.add_argument("--rounds", type=int, default=1, help="lockstep native/latentmem rollouts of figure 4")
    parser.add_argument("--demo-frames", type=int, default=1200, help="latent frames of the in-process demo rollouts (figure 1a)")
    parser.add_argument("--demo-budget-gb", type=float, default=0.002, help="memory_budget_gb of the budgeted demo runs")
    parser.add_argument("--launch-frames", type=int, default=60,
                        help="latent frames of the two `inference.sh demo latentmem` launches (figure 1b; the VAE decode "
                             "takes most of their time: 1200 frames take about 6 minutes each on 2 cores)")
    parser.add_argument("--skip-demo", action="store_true", help="skip figure 1")
    parser.add_argument("--skip-toy", action="store_true", help="skip figure 3")
    parser.add_argument("--skip-speed", action="store_true", help="skip figure 4")
    parser.add_argument("--toy-videos", type=int, default=4)
    parser.add_argument("--toy-frames", type=int, default=240)
    parser.add_argument("--full-size", action="store_true", help="GPU only: Wan2.1-1.3B, random weights, FPS per tier")
    parser.add_argument("--full-size-frames", type=int, default=120)
    parser.add_argument("--full-size-budget-gb", type=float, default=8.0, help="bank budget of every tier at full size")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = parser.parse_args()
    if args.full_size and not torch.cuda.is_available():
        parser.error("--full-size builds Wan2.1-1.3B and times it on a GPU; no CUDA device is available here. "
                     "Run it on a GPU machine, or drop --full-size for the CPU figures.")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    figures: dict = {"threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                     "load_average_at_start": [round(x, 1) for x in os.getloadavg()]}
    if args.full_size:
        figures["full_size"] = full_size(args.full_size_frames, args.full_size_budget_gb, torch.device("cuda"))
        print(json.dumps(figures))
        return
    if not args.skip_demo:
        report_demo(figures, args)
    table = memory_table()
    figures["full_size_bank_gb"] = table
    print("full-size history bank (GB of host memory; Wan2.1-1.3B 480x832, window 12, 4 latent frames/s):")
    for length, row in table.items():
        print(f"  {length:>5}: " + ", ".join(f"{k} {v}" for k, v in row.items()))
    if not args.skip_toy:
        report_toy(figures, args)
    if not args.skip_speed:
        report_speed(figures, args)
    figures["load_average_at_end"] = [round(x, 1) for x in os.getloadavg()]
    # null: not measured in this run (skipped)
    figures["budget_held"] = None if args.skip_demo else figures["demo_memory"]["budget_held"]
    figures["prefetch_bit_identical"] = None if args.skip_speed else figures["speed"]["prefetch_bit_identical"]
    figures["latentmem_over_native_steady"] = None if args.skip_speed else figures["speed"]["latentmem_over_native_steady"]
    print(json.dumps(figures))


def report_demo(figures: dict, args: argparse.Namespace) -> None:
    mem = demo_memory(args.demo_frames, args.demo_budget_gb)
    figures["demo_memory"] = mem
    print(f"demo rollout, {args.demo_frames} frames, resident memory per block (this process); the budgeted bank "
          f"({mem['max_banked']} frames, {args.demo_budget_gb} GB) is full from block {mem['bank_full_at_block']} of {mem['blocks']}:")
    for name in ("native", "unbounded", "budget"):
        f = mem[name]
        print(f"  {name:>9}: {f['rss_mb_at_full']} MB when full -> {f['rss_mb_end']} MB at the end, "
              f"{f['bytes_per_frame_after_full']} bytes per frame after that")
    print(f"  legitimate growth (native's slope): output latents {mem['latent_bytes_per_frame']} B/frame + context log; "
          f"budgeted latentmem beyond it: {mem['budget_excess_bytes_per_frame']} B/frame (retrieval log, descriptors); "
          f"the bank's own bytes per frame: {mem['bank_bytes_per_frame']}; budget held: {mem['budget_held']}")
    with tempfile.TemporaryDirectory() as tmp:
        unbounded = launch_peak_rss(args.launch_frames, [], Path(tmp) / "unbounded")
        budget = launch_peak_rss(args.launch_frames, [f"model_kwargs.memory_budget_gb={args.demo_budget_gb}"], Path(tmp) / "budget")
    figures["launch_unbounded"], figures["launch_budget"] = unbounded, budget
    for name, f in (("no budget", unbounded), (f"budget {args.demo_budget_gb} GB", budget)):
        print(f"bash inference.sh demo latentmem num_output_frames={args.launch_frames}, {name}: peak RSS {f['peak_rss_mb']} MB "
              f"(all processes: torchrun, inference, ffmpeg), {f['seconds']} s (rollout {f['rollout_seconds']} s, "
              f"decode {f['decode_seconds']} s)")


def report_toy(figures: dict, args: argparse.Namespace) -> None:
    toy = toy_agreement(args.toy_videos, args.toy_frames, budgets=[12, 24, 48])
    figures["toy_agreement"] = toy
    print(f"toy revisits ({args.toy_videos} videos x {args.toy_frames} frames, avg-pool, K 6, R 5): unbounded bank "
          f"revisit hit rate {toy['unbounded']['revisit_hit_rate']}")
    for name, f in toy.items():
        if name != "unbounded":
            print(f"  {name:>14} frames: same top-K {f['same_top_k']}, frames in common {f['frames_in_common']}, "
                  f"revisit hit rate {f['revisit_hit_rate']}")


def report_speed(figures: dict, args: argparse.Namespace) -> None:
    speed = speed_and_accuracy(args.model, args.frames, args.rounds)
    figures["speed"] = speed
    print(f"{args.model} model, {args.frames} frames, native and latentmem in lockstep x {args.rounds}: "
          f"{speed['steady_blocks']} full-K blocks, native {speed['native_ms_per_block']} ms/block, latentmem "
          f"{speed['latentmem_ms_per_block']} ms/block, ratio {speed['latentmem_over_native_steady']} "
          f"(per block {speed['latentmem_over_native_per_block']})")
    print("  latentmem's own steps per full-K block (ms): "
          + ", ".join(f"{k} {v}" for k, v in speed["latentmem_steps_ms_per_block"].items()))
    print(f"  prefetched loop bit-identical to the plain loop: {speed['prefetch_bit_identical']}")
    print(f"  fp8 bank vs bf16 bank: final latents max |diff| {speed['fp8_vs_bf16_max_abs']:.3e}, mean "
          f"{speed['fp8_vs_bf16_mean_abs']:.3e} (latent std {speed['latent_std']:.3f}); "
          f"{speed['fp8_blocks_with_other_indices']} of {speed['retrieving_blocks']} blocks retrieved other indices")


if __name__ == "__main__":
    main()
