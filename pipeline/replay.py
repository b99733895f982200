"""Replay a reference trace (fixtures' format) and report the error of every call and of the rollout.

    python -m pipeline.replay TRACE.pt [TRACE.pt ...] [--atol 1e-5]

Two checks per trace: (1) call replay: the recorded inputs of every forward call, in order, with
the recorded retrieval indices; (2) full loop: our own block loop from the recorded initial noise
with the recorded re-noising draws, comparing final latents (and, for retrieval traces,
descriptors and retrieved indices). Weights named in the trace's `config.files` are read from
the trace's folder. Exits 1 when any error exceeds the tolerance.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.build import load_descriptor, load_generator
from pipeline.descriptors import FrameDescriptor
from pipeline.generation_config import AdapterConfig
from pipeline.rollout import CausalRollout, gaussian_noise, generate
from pipeline.rollout_config import ModelKwargs, RolloutConfig
from wan.model import CausalWanModel
from wan.model_config import WanModelConfig

CPU = torch.device("cpu")


@dataclass
class ReplayReport:
    call_errors: list[float]
    output_error: float
    descriptor_error: float | None
    selections_match: bool | None

    def ok(self, atol: float, descriptor_atol: float) -> bool:
        return (
            max(self.call_errors) <= atol
            and self.output_error <= atol
            and (self.descriptor_error is None or self.descriptor_error <= descriptor_atol)
            and self.selections_match is not False
        )


def _known(schema, values: dict) -> dict:
    """The entries of a trace's flat config dict that are fields of `schema` (None: keep the default)."""
    names = {f.name for f in dataclasses.fields(schema)}
    return {k: v for k, v in values.items() if k in names and v is not None}


def rollout_config(cfg: dict, folder: Path) -> RolloutConfig:
    """The trace's settings as our RolloutConfig (the reference stores them flat, we nest model_kwargs)."""
    mk = ModelKwargs(**_known(ModelKwargs, cfg))
    if mk.uses_encoder:
        mk.ae_ckpt = str(folder / cfg["files"]["ae"])
    rcfg = RolloutConfig(**_known(RolloutConfig, {**cfg, "denoising_step_list": list(cfg["denoising_step_list"])}), model_kwargs=mk)
    rcfg.validate()
    return rcfg


def build_model(cfg: dict, folder: Path) -> CausalWanModel:
    """The trace's generator (+ LoRA, merged) through pipeline/build.py's loader, float32 on the CPU."""
    lora = cfg.get("lora")
    adapter = AdapterConfig(rank=lora["rank"], alpha=lora["alpha"]) if lora else None
    return load_generator(WanModelConfig.from_dict(cfg["model"]), folder / cfg["files"]["generator"], CPU, torch.float32,
                          lora_ckpt=folder / cfg["files"]["lora"] if lora else None, adapter=adapter)


def build_descriptor(rcfg: RolloutConfig, model: CausalWanModel, latent_shape: tuple[int, int, int]) -> FrameDescriptor | None:
    if latent_shape[0] != model.cfg.in_dim:
        raise ValueError(f"trace noise has {latent_shape[0]} channels, the model expects in_dim {model.cfg.in_dim}")
    return load_descriptor(rcfg.model_kwargs, latent_shape, CPU)


def replay_calls(model: CausalWanModel, rcfg: RolloutConfig, descriptor: FrameDescriptor | None, trace: dict,
                 seed: int = 0) -> list[float]:
    """Feed every recorded call in order; returns the max abs error of each call's x0.

    A recache pass with context_noise > 0 draws its noise from a generator seeded with `seed`."""
    latent_shape = tuple(trace["noise"].shape[2:])
    # The recorded retrieval indices replace every decision, so the descriptor's values are never read.
    rollout = CausalRollout(model, rcfg, trace["prompt_embeds"], latent_shape, trace["noise"].shape[1], descriptor)
    noise = gaussian_noise(torch.Generator().manual_seed(seed))
    errors, attn, steps = [], None, len(rcfg.denoising_step_list)
    for call in trace["calls"]:
        b = call["block"]
        if attn is None or attn.layout.current_frames[0] != call["current_start_frame"]:
            indices = call["memory_indices"]
            attn = rollout.begin_block(call["current_start_frame"], None if indices is None else torch.tensor(indices))
        if call["role"] == "denoise":
            x0 = rollout.predict_x0(attn, trace["step_input"][b, call["step"]], trace["step_timestep"][b, call["step"]])
            expected = trace["step_x0"][b, call["step"]]
        else:
            x0 = rollout.finish_block(attn, trace["step_x0"][b, steps - 1], noise)
            expected = trace["recache_x0"][b]
        errors.append((x0.cpu() - expected).abs().max().item())
    return errors


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


def replay_trace(path: Path, trace: dict) -> ReplayReport:
    cfg = trace["config"]
    rcfg = rollout_config(cfg, path.parent)
    model = build_model(cfg, path.parent)
    descriptor = build_descriptor(rcfg, model, tuple(trace["noise"].shape[2:]))
    call_errors = replay_calls(model, rcfg, descriptor, trace)
    result = generate(model, rcfg, trace["noise"], trace["prompt_embeds"], recorded_noise(trace), descriptor)
    output_error = (result.latents.cpu() - trace["output"]).abs().max().item()
    descriptor_error = selections_match = None
    if rcfg.model_kwargs.use_latentmem:
        descriptor_error = (result.descriptors.cpu() - trace["descriptors"]).abs().max().item()
        expected = [(e["query_frame"], e["selected_pool_indices"]) for e in trace["memory_indices_log"]]
        ours = [(e["block_start_frame"], e["selected_pool_indices"]) for e in result.retrieval_log]
        selections_match = expected == ours
    return ReplayReport(call_errors, output_error, descriptor_error, selections_match)


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
            + ("" if report.descriptor_error is None else f", descriptors {report.descriptor_error:.3e}")
            + ("" if report.selections_match is None else f", retrieved indices {'identical' if report.selections_match else 'DIFFER'}")
        )
    if not replayed:
        print("error: none of the given files is a rollout trace", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
