"""The GPU-path changes on the CPU: host syncs per block, ms per block before / after, and with `compile: true`.

    python benchmarks/bench_gpu_path.py [--baseline PATH] [--rounds 5] [--warmup 5] [--threads 0]

Each variant runs in its own worker process holding a warmed-up rollout of the mid-size model
(dim 512, 8 layers, 8 heads, ffn 2048, text_len 512, latent frames [16, 30, 52] as in
bench_forward.py; random weights, fp32, native window 12 / sink 1, 3 frames per block, 4 steps):
  baseline  the code at --baseline (a checkout of the commit before these changes, e.g.
            `git worktree add /tmp/before <commit>`), eager; skipped without --baseline;
  eager     this checkout;
  compile   this checkout with `compile: true` (its compilation happens during the warm-up).
After --warmup blocks (the window is full from block 3 on) the workers take turns, one full block
each per round (N denoising calls + recache); per variant the mean ms over the rounds and ratios
between variants measured in the same rounds. Then each code base counts host syncs
(utils/host_sync.py) between a block's first and last call of one steady-state block, for native
and latentmem (avg-pool retrieval, K = 6 retrieved from block 8 on), on the same 8-layer model with
small frames [16, 8, 8] (the count does not depend on the frame size). The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MID = dict(dim=512, ffn_dim=2048, freq_dim=256, text_dim=512, text_len=512, num_heads=8, num_layers=8)
FRAME = (16, 30, 52)
COUNT_FRAME = (16, 8, 8)
STEADY = {"native": 5, "latentmem": 8}  # first steady-state block of each method


def load_counter():
    """HostSyncCounter from this checkout's file (the baseline checkout may not have it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("host_sync", HERE.parent / "utils" / "host_sync.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.HostSyncCounter


def worker(method: str, compile: bool, warmup: int, frame: tuple[int, int, int]) -> None:
    """Serve `block` (-> ms of one block) and `count` (-> host syncs of one block as JSON) on stdin/stdout."""
    import torch

    from pipeline.build import build_context_method
    from pipeline.descriptors import AvgPoolDescriptor
    from pipeline.prompt_schedule import PromptSchedule
    from pipeline.retrieval import TopKRetrieval
    from pipeline.rollout import CausalRollout, gaussian_noise
    from pipeline.rollout_config import ModelKwargs, RolloutConfig
    from wan.model import CausalWanModel
    from wan.model_config import WanModelConfig

    torch.manual_seed(0)
    model = CausalWanModel(WanModelConfig(**MID)).eval()
    options = {"compile": True} if compile else {}  # the baseline's RolloutConfig has no such key
    kwargs = ModelKwargs(compression_method="avg_pool") if method == "latentmem" else ModelKwargs()
    cfg = RolloutConfig(method=method, model_kwargs=kwargs, **options)
    policy = build_context_method(cfg, lambda: TopKRetrieval(AvgPoolDescriptor(), "avg_pool")).policy
    g = torch.Generator().manual_seed(0)
    prompt = torch.randn(1, 16, MID["text_dim"], generator=g)
    num_frames = 3 * 400
    rollout = CausalRollout(model, cfg, policy, [prompt], frame, num_frames)
    blocks = iter(PromptSchedule.single("").blocks(num_frames, 3))
    noise = gaussian_noise(g)
    Counter = load_counter()

    @torch.no_grad()
    def run_block(counter=None) -> float:
        block = next(blocks)
        start = time.perf_counter()
        attn = rollout.begin_block(block)
        if counter is not None:
            counter.active = True
        x0 = rollout.denoise_block(attn, noise((1, 3, *frame)), noise)
        _, kv = rollout.recache(attn, x0, noise)
        if counter is not None:
            counter.active = False
        rollout.end_block(block, attn, x0, kv)
        return (time.perf_counter() - start) * 1000

    for _ in range(warmup):
        run_block()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "block":
            print(f"{run_block():.3f}", flush=True)
        elif line.strip() == "count":
            with Counter() as counter:
                run_block(counter)
            print(json.dumps(dict(counter.calls)), flush=True)


class Worker:
    def __init__(self, name: str, code: Path, method: str, compile: bool, warmup: int, threads: int, small: bool = False):
        env = dict(os.environ, PYTHONPATH=str(code))
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        args = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--warmup", str(warmup)]
        args += (["--compile"] if compile else []) + (["--small"] if small else [])
        self.name = name
        self.proc = subprocess.Popen(args, cwd=code, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def ask(self, command: str | None = None) -> str:
        if command is not None:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} ended (exit code {self.proc.wait()})")
        return line.strip()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def time_variants(variants: dict[str, tuple[Path, bool]], rounds: int, warmup: int, threads: int) -> dict[str, list[float]]:
    workers = [Worker(name, code, "native", compile, warmup, threads) for name, (code, compile) in variants.items()]
    try:
        for w in workers:
            assert w.ask() == "ready"
            print(f"{w.name}: warmed up ({warmup} blocks)", flush=True)
        ms = {w.name: [] for w in workers}
        for r in range(rounds):
            for w in workers:
                ms[w.name].append(float(w.ask("block")))
            print(f"round {r}: " + ", ".join(f"{name} {v[-1]:.0f} ms" for name, v in ms.items()), flush=True)
        return ms
    finally:
        for w in workers:
            w.close()


def count_syncs(code: Path, method: str) -> dict[str, int]:
    w = Worker(f"count {method}", code, method, False, STEADY[method], 0, small=True)
    try:
        assert w.ask() == "ready"
        return json.loads(w.ask("count"))
    finally:
        w.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, help="checkout of the code before the GPU-path changes")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (timed blocks per variant)")
    parser.add_argument("--warmup", type=int, default=STEADY["native"], help="blocks each worker runs before the rounds")
    parser.add_argument("--threads", type=int, default=0, help="OMP threads of every worker (0 = torch default)")
    parser.add_argument("--worker", choices=sorted(STEADY), help=argparse.SUPPRESS)
    parser.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--small", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.compile, args.warmup, COUNT_FRAME if args.small else FRAME)
        return
    if args.warmup < STEADY["native"] or args.rounds < 1:
        parser.error(f"--warmup must be >= {STEADY['native']} (steady state) and --rounds >= 1")
    if args.baseline is not None and not (args.baseline / "pipeline" / "rollout.py").is_file():
        parser.error(f"--baseline {args.baseline} is not a checkout of this project (no pipeline/rollout.py)")
    here = HERE.parent
    variants = {"eager": (here, False), "compile": (here, True)}
    if args.baseline is not None:
        variants = {"baseline": (args.baseline, False), **variants}
    figures: dict = {"model": "mid", "threads": args.threads or "default", "rounds": args.rounds, "warmup": args.warmup}
    codes = {"after": here} if args.baseline is None else {"before": args.baseline, "after": here}
    for label, code in codes.items():
        for method in STEADY:
            calls = count_syncs(code, method)
            figures[f"syncs_per_block_{method}_{label}"] = sum(calls.values())
            figures[f"syncs_per_block_{method}_{label}_by_call"] = calls
            print(f"host syncs in one steady {method} block ({label}, {MID['num_layers']} layers): {sum(calls.values())} {calls}",
                  flush=True)
    ms = time_variants(variants, args.rounds, args.warmup, args.threads)
    for name, values in ms.items():
        figures[f"{name}_ms_per_block"] = round(statistics.mean(values), 1)
        print(f"mid-size native, steady state: {name:9s} {statistics.mean(values):8.1f} ms/block (min {min(values):.1f})")
    names = list(ms)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ratio = statistics.mean(x / y for x, y in zip(ms[b], ms[a]))  # per round: same machine state
            figures[f"{b}_over_{a}"] = round(ratio, 3)
            print(f"{b} / {a}: x{ratio:.3f} (mean of per-round ratios)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
