"""Replay a reference trace (fixtures' format) and report the error of every call and of the rollout.

    python -m pipeline.replay TRACE.pt [TRACE.pt ...] [--atol 1e-5]

Two checks per trace: (1) call replay: the recorded inputs of every forward call, in order, through
the trace's context method (its own retrieval decisions, flushes and cuts, compared with the
recorded ones); (2) full loop: our own block loop from the recorded initial noise with the recorded
re-noising draws, comparing final latents (and, for retrieval traces, descriptors and retrieved
indices). When `attn_layout_<rollout>.json` lies beside the trace, the attention layout of every
call (attended frames and their RoPE positions, in order) must equal it exactly. Weights named in
the trace's `config.files` are read from the trace's folder; the model, config and context method
are built through pipeline/build.py. Exits 1 when any check fails.

LongLive's interactive traces (`mode` longlive_interactive: native's cache with a KV recache at every
prompt switch) also check each switch call's x0 and the window cache right after it (every layer but
the first, whose keys do not depend on the prompt) against the recorded ones, and the prompt segment
that produced every attended key.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipeline.build import ContextMethod, build_context_method, load_generator, load_retrieval
from pipeline.generation_config import AdapterConfig
from pipeline.prompt_schedule import PromptSchedule, longlive_schedule
from pipeline.rollout import CausalRollout, gaussian_noise, generate
from pipeline.rollout_config import METHOD_KEYS, ModelKwargs, RolloutConfig
from wan.block_attention import BlockContext
from wan.model import CausalWanModel
from wan.model_config import WanModelConfig

CPU = torch.device("cpu")
WINDOW_KEYS = ("local_attn_size", "timestep_shift", "sink_size")
MODES = {"longlive_interactive": "native"}  # trace mode -> our method, where the names differ


@dataclass
class ReplayReport:
    call_errors: list[float]
    output_error: float
    descriptor_error: float | None
    selections_match: bool | None
    layout_mismatches: list[str] | None  # None: no layout file beside the trace
    cache_errors: list[float] = field(default_factory=list)  # per prompt switch: window cache right after it

    def ok(self, atol: float, descriptor_atol: float) -> bool:
        return (
            max(self.call_errors) <= atol
            and max(self.cache_errors, default=0.0) <= atol
            and self.output_error <= atol
            and (self.descriptor_error is None or self.descriptor_error <= descriptor_atol)
            and self.selections_match is not False
            and not self.layout_mismatches
        )


def rollout_config(trace: dict, folder: Path) -> RolloutConfig:
    """The trace's settings as our RolloutConfig: `mode` names the method; the reference stores the keys
    flat (writing 0 / None for those its method does not use), we nest model_kwargs."""
    cfg = trace["config"]
    method = MODES.get(trace["mode"], trace["mode"])
    keys = WINDOW_KEYS + ("global_sink",) + METHOD_KEYS.get(method, ())
    mk = ModelKwargs(**{k: v for k, v in cfg.items() if k in keys and v is not None})
    if "rope_cut_transition_from" in cfg:  # ∞-RoPE traces
        mk.infrope_cut_position = cfg["rope_cut_transition_from"]
    rcfg = RolloutConfig(denoising_step_list=list(cfg["denoising_step_list"]), warp_denoising_step=cfg["warp_denoising_step"],
                         num_frame_per_block=cfg["num_frame_per_block"], context_noise=cfg["context_noise"], method=method,
                         model_kwargs=mk)
    if rcfg.uses_encoder:
        mk.ae_ckpt = str(folder / cfg["files"]["ae"])
    rcfg.validate()
    return rcfg


def build_model(cfg: dict, folder: Path) -> CausalWanModel:
    """The trace's generator (+ LoRA, merged) through pipeline/build.py's loader, float32 on the CPU."""
    lora = cfg.get("lora")
    adapter = AdapterConfig(rank=lora["rank"], alpha=lora["alpha"]) if lora else None
    return load_generator(WanModelConfig.from_dict(cfg["model"]), folder / cfg["files"]["generator"], CPU, torch.float32,
                          lora_ckpt=folder / cfg["files"]["lora"] if lora else None, adapter=adapter)


def build_method(rcfg: RolloutConfig, model: CausalWanModel, latent_shape: tuple[int, int, int]) -> ContextMethod:
    if latent_shape[0] != model.cfg.in_dim:
        raise ValueError(f"trace noise has {latent_shape[0]} channels, the model expects in_dim {model.cfg.in_dim}")
    return build_context_method(rcfg, lambda: load_retrieval(rcfg.model_kwargs, latent_shape, CPU))


def trace_prompts(trace: dict, method: ContextMethod) -> tuple[list[torch.Tensor], PromptSchedule]:
    """Per-segment conditioning and the schedule: LongLive's segments and switch indices, or the one parsed
    from the trace's prompt line (one segment if none)."""
    if "switch_frame_indices" in trace:
        schedule = longlive_schedule(trace["segment_prompts"], trace["switch_frame_indices"], trace["config"]["num_frame_per_block"])
        return trace["segment_prompt_embeds"], schedule
    schedule = method.parse_prompt(trace.get("prompt", ""))
    embeds = trace.get("scene_prompt_embeds", [trace["prompt_embeds"]])
    return embeds, schedule


def schedule_mismatches(trace: dict, schedule: PromptSchedule) -> list[str]:
    """Our schedule's per-block scene / switch (flush, cut) events against the recorded ones."""
    blocks = schedule.blocks(trace["noise"].shape[1], trace["config"]["num_frame_per_block"])
    if "block_segment" in trace:  # LongLive
        ours = [(b.scene, b.boundary) for b in blocks]
        recorded = list(zip(trace["block_segment"], trace["block_switch"]))
    elif "block_scene" in trace:  # ∞-RoPE
        ours = [(b.scene, b.boundary, b.cut) for b in blocks]
        recorded = list(zip(trace["block_scene"], trace["block_flush"], trace["block_scene_cut"]))
    else:
        return []
    return [] if ours == recorded else [f"schedule events {ours} != recorded {recorded}"]


def layout_mismatches(expected: list[dict], ours: list[dict]) -> list[str]:
    """Compare per-call queries and keys with the measured layout: [frame, position, current|cached], plus the
    prompt segment that produced each key where the file records it ([frame, position, source, segment])."""
    if len(expected) != len(ours):
        return [f"{len(ours)} calls, layout file has {len(expected)}"]
    out = []
    for i, (e, o) in enumerate(zip(expected, ours)):
        measured = [[f, p, "current" if src == "current" else "cached", *seg] for f, p, src, *seg in e["keys"]]
        keys = [[f, p, kind, *([segment] if len(m) == 4 else [])]
                for (f, p, kind, _, segment), m in zip(o["keys"], measured)] if len(o["keys"]) == len(measured) else o["keys"]
        if e["queries"] != o["queries"] or measured != keys:
            out.append(f"call {i}: queries {o['queries']} keys {keys}; measured queries {e['queries']} keys {measured}")
    return out


class RecordingRollout(CausalRollout):
    """A rollout that keeps what its policy's clean passes (a prompt switch's recache) computed, and its window
    cache right after each switch: (frames, per-layer keys rotated at their frames, values), [B, S, n, d] each."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.clean_calls: list[tuple[BlockContext, torch.Tensor, torch.Tensor]] = []  # (context, input, x0)
        self.caches_after_switch: list[tuple[list[int], list[torch.Tensor], list[torch.Tensor]]] = []

    def clean_call(self, context, x0, scene):
        out, kv = super().clean_call(context, x0, scene)
        self.clean_calls.append((context, x0, out))
        return out, kv

    def switch_prompt(self, block):
        event = super().switch_prompt(block)
        cache = self.policy.cache
        slots = list(range(cache.length))
        frames = [cache.frame_at(i) for i in slots]
        kv = [cache.read(layer, slots) for layer in range(cache.num_layers)]
        keys = [self.rope.rotate(k, torch.tensor(frames), self.grid_hw).cpu() for k, _ in kv]
        self.caches_after_switch.append((frames, keys, [v.cpu() for _, v in kv]))
        return event


class KeySegments:
    """Which prompt segment wrote the K/V of every cached frame, from the rollout's own events."""

    def __init__(self):
        self.of_frame: dict[int, int] = {}

    def layout(self, context: BlockContext, scene: int) -> dict:
        """context.layout(0) with each key's segment appended (the current block's keys: `scene`)."""
        layout = context.layout(0)
        keys = [[f, p, kind, n, scene if kind == "current" else self.of_frame.get(f)] for f, p, kind, n in layout["keys"]]
        return {**layout, "keys": keys}

    def written(self, frames, scene: int) -> None:
        self.of_frame.update({f: scene for f in frames})


def cache_error(snapshot: tuple[list[int], list[torch.Tensor], list[torch.Tensor]], switch: dict) -> float:
    """Max abs difference of a window cache snapshot (RecordingRollout) with a recorded switch's cache_k_after /
    cache_v_after, over layers >= 1 (layer 0 does not depend on the prompt); inf if the shapes differ."""
    _, keys, values = snapshot
    err = 0.0
    for layer in range(1, len(keys)):
        k, v = switch["cache_k_after"][layer], switch["cache_v_after"][layer]
        if keys[layer].shape != k.shape:
            return float("inf")
        err = max(err, (keys[layer] - k).abs().max().item(), (values[layer] - v).abs().max().item())
    return err


def replay_calls(model: CausalWanModel, rcfg: RolloutConfig, method: ContextMethod, trace: dict,
                 seed: int = 0) -> tuple[list[float], list[dict], list, list[float]]:
    """Feed every recorded call in order -> (max abs error of each call's x0, layout of each call, retrieval log,
    window-cache error after each prompt switch).

    A recache pass with context_noise > 0 draws its noise from a generator seeded with `seed`. A prompt switch
    runs through CausalRollout.begin_block, which recaches from the clean latents it was fed (the recorded ones)."""
    embeds, schedule = trace_prompts(trace, method)
    latent_shape = tuple(trace["noise"].shape[2:])
    rollout = RecordingRollout(model, rcfg, method.policy, embeds, latent_shape, trace["noise"].shape[1])
    blocks = schedule.blocks(trace["noise"].shape[1], rcfg.num_frame_per_block)
    noise = gaussian_noise(torch.Generator().manual_seed(seed))
    switches = iter(trace.get("switch_recache", []))
    segments = KeySegments()
    errors, layouts, cache_errors, attn, begun, steps = [], [], [], None, -1, len(rcfg.denoising_step_list)
    try:  # the policy owns its history bank (a disk tier holds an open file until closed)
        for call in trace["calls"]:
            b, role = call["block"], call["role"]
            block = blocks[b]
            if begun != b:  # a LongLive switch call comes first in its block and runs inside begin_block
                attn, begun = rollout.begin_block(block), b
            if role == "switch_recache":
                switch = next(switches)
                context, x_in, x0 = rollout.clean_calls[-1]
                layouts.append(segments.layout(context, block.scene))
                segments.written(rollout.switch_event["recached_frames"], block.scene)
                errors.append(max((x0.cpu() - switch["x0"]).abs().max().item(), (x_in.cpu() - switch["input"]).abs().max().item()))
                cache_errors.append(cache_error(rollout.caches_after_switch[-1], switch))
                continue
            layouts.append(segments.layout(attn.context, block.scene))
            if role == "denoise":
                x0 = rollout.predict_x0(attn, trace["step_input"][b, call["step"]], block_timestep(trace["step_timestep"][b, call["step"]]))
                expected = trace["step_x0"][b, call["step"]]
            else:
                clean = trace["step_x0"][b, steps - 1]
                x0, kv = rollout.recache(attn, clean, noise)
                rollout.end_block(block, attn, clean, kv)
                segments.written(block.frames, block.scene)
                expected = trace["recache_x0"][b]
            errors.append((x0.cpu() - expected).abs().max().item())
        return errors, layouts, rollout.policy.extras().get("retrieval_log", []), cache_errors
    finally:
        rollout.policy.close()


def block_timestep(timestep: torch.Tensor) -> float:
    """The one timestep of a recorded call (timestep: [B, nf], equal entries: the loop runs a block at one timestep)."""
    if not (timestep == timestep.flatten()[0]).all():
        raise ValueError(f"recorded call has different timesteps per frame {timestep.tolist()}; the block loop uses one per call")
    return float(timestep.flatten()[0])


def recorded_noise(trace: dict):
    draws = iter(trace["renoise_noise"].flatten(0, 1))  # block-major, then step

    def next_draw(shape: torch.Size) -> torch.Tensor:
        noise = next(draws)
        if noise.shape != shape:
            raise ValueError(f"recorded noise has shape {tuple(noise.shape)}, the loop asked for {tuple(shape)}")
        return noise

    return next_draw


def is_trace(obj) -> bool:
    """Rollout traces hold a `config` dict with the model's config; weight files (gen_generator.pt, ...) do not."""
    return isinstance(obj, dict) and isinstance(obj.get("config"), dict) and "model" in obj["config"]


def selections(log: list[dict]) -> list[tuple[int, list]]:
    return [(e["block_start_frame"], e["selected_pool_indices"]) for e in log]


def replay_trace(path: Path, trace: dict) -> ReplayReport:
    rcfg = rollout_config(trace, path.parent)
    model = build_model(trace["config"], path.parent)
    method = build_method(rcfg, model, tuple(trace["noise"].shape[2:]))
    call_errors, layouts, call_log, cache_errors = replay_calls(model, rcfg, method, trace)
    embeds, schedule = trace_prompts(trace, method)
    result = generate(model, rcfg, trace["noise"], embeds, recorded_noise(trace), method.policy, schedule)
    output_error = (result.latents.cpu() - trace["output"]).abs().max().item()
    descriptor_error = selections_match = None
    if "descriptors" in result.extras:
        descriptor_error = (result.extras["descriptors"].cpu() - trace["descriptors"]).abs().max().item()
        expected = [(e["query_frame"], e["selected_pool_indices"]) for e in trace["memory_indices_log"]]
        selections_match = expected == selections(result.extras["retrieval_log"]) == selections(call_log)
    mismatches = schedule_mismatches(trace, schedule)
    layout_file = path.parent / f"attn_layout_{trace.get('rollout')}.json"
    if layout_file.is_file():
        mismatches += layout_mismatches(json.loads(layout_file.read_text())["calls"], layouts)
    elif not mismatches:
        mismatches = None
    return ReplayReport(call_errors, output_error, descriptor_error, selections_match, mismatches, cache_errors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("traces", nargs="+", type=Path, help="trace files (gen_*.pt) in the fixtures' format")
    parser.add_argument("--atol", type=float, default=1e-5, help="tolerance on every call's x0 and the final latents")
    parser.add_argument("--descriptor-atol", type=float, default=5e-5, help="tolerance on retrieval descriptors")
    parser.add_argument("--verbose", action="store_true", help="print every call's error")
    args = parser.parse_args(argv)
    failed, replayed = False, 0
    for path in args.traces:
        if not path.is_file():
            print(f"error: trace '{path}' does not exist", file=sys.stderr)
            return 2
        trace = torch.load(path, map_location="cpu", weights_only=True)
        if not is_trace(trace):
            print(f"SKIP {path.name}: not a rollout trace (no config['model']); weight files are read beside the traces")
            continue
        report = replay_trace(path, trace)
        replayed += 1
        ok = report.ok(args.atol, args.descriptor_atol)
        failed |= not ok
        if args.verbose:
            for i, err in enumerate(report.call_errors):
                print(f"  call {i:4d}: max abs error {err:.3e}")
        print(
            f"{'PASS' if ok else 'FAIL'} {path.name}: {len(report.call_errors)} calls, max call error "
            f"{max(report.call_errors):.3e}, final latents {report.output_error:.3e}"
            + (f", caches after {len(report.cache_errors)} switches {max(report.cache_errors):.3e}" if report.cache_errors else "")
            + ("" if report.descriptor_error is None else f", descriptors {report.descriptor_error:.3e}")
            + ("" if report.selections_match is None else f", retrieved indices {'identical' if report.selections_match else 'DIFFER'}")
            + ("" if report.layout_mismatches is None else
               f", attention layout {'identical' if not report.layout_mismatches else 'DIFFERS'}")
        )
        for line in (report.layout_mismatches or [])[:5]:
            print(f"  {line}")
    if not replayed:
        print("error: none of the given files is a rollout trace", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
