"""The memory plan of a run: every component's bytes on every device, printed at start, checked before loading.

Weights are counted on the `meta` device (the real modules, no memory); caches and the history bank
from their shapes; activations are estimates (stated as such). A run has phases that never overlap:
the prompts are encoded and the text encoder released before the generator loads, a merged LoRA
exists only while it is folded in, the VAE decodes after the rollout's caches are freed. A device
fits when the largest phase fits its free memory (CPU: available RAM; CUDA: `torch.cuda.mem_get_info`).

    python -m pipeline.memory_plan --config configs/longlive_latentmem.yaml [key=value ...] [--device cuda]
        [--dtype bfloat16] [--gpu-gb 24 48 80] [--live]

prints the plan of a config with fit verdicts for the given GPU sizes (no weights or GPU needed); `--live`
plans the live app (app.sh), whose text encoder stays loaded to encode prompts typed during the video.
"""
from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

from pipeline.bank_storage import fits_with_headroom, host_available_bytes
from pipeline.generation_config import GenerationConfig
from pipeline.history_bank import bank_capacity, frame_bytes
from pipeline.memory_switch import MEMORY_SWITCH_POLICIES
from utils.config import ConfigError
from utils.dtypes import resolve_dtype
from wan.geometry import LatentGeometry
from wan.model_config import WanModelConfig, model_preset
from utils.checkpoint_io import load_checkpoint

GB = 1e9
DISK = "disk:"  # device name prefix of the disk tier's folder in the plan
PHASES = ("encode prompts", "load", "rollout", "decode")
# Wan's VAE decodes one latent frame (4 video frames) at a time at `base_dim` channels at full resolution;
# about this many such tensors are alive at its peak (input, norm, conv output, causal feature cache).
VAE_LIVE_TENSORS = 4
VIDEO_FRAMES_PER_LATENT = 4


class MemoryPlanError(ConfigError):
    """The plan does not fit a device's free memory; the message names the component and the fixing option."""


@dataclass(frozen=True)
class PlanItem:
    component: str
    device: str
    nbytes: int
    phases: tuple[str, ...]
    fix: str  # the option that makes it smaller
    estimate: bool = False  # activations: an estimate, not a count
    # placed by `memory_device: auto` on the accelerator: planned in host memory instead (with this fix) when
    # the accelerator's rollout phase does not fit with headroom (resolve_auto_tier)
    auto_host_fix: str | None = None


def _param_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def dit_bytes(mcfg: WanModelConfig, dtype: torch.dtype) -> int:
    from wan.model import CausalWanModel

    with torch.device("meta"):
        return _param_bytes(CausalWanModel(mcfg).to_inference_dtype(dtype))  # with Wan's float32 parts, as loaded


def lora_bytes(mcfg: WanModelConfig, rank: int, dtype: torch.dtype) -> int:
    """LoRA A and B of every Linear of wan/lora.py's targets: q, k, v, o of both attentions and the FFN."""
    d, f = mcfg.dim, mcfg.ffn_dim
    per_layer = 8 * rank * (d + d) + rank * (d + f) + rank * (f + d)
    return mcfg.num_layers * per_layer * dtype.itemsize


def text_encoder_bytes(preset: str, dtype: torch.dtype) -> int:
    from transformers import UMT5EncoderModel

    from wan.text_encoder import umt5_config
    from wan.text_encoder_config import text_encoder_preset

    with torch.device("meta"):
        return _param_bytes(UMT5EncoderModel(umt5_config(text_encoder_preset(preset))).to(dtype))


def text_activation_bytes(preset: str, text_len: int, dtype: torch.dtype) -> int:
    """One prompt through the encoder (prompts are encoded one at a time): hidden states, the FFN and fp32 scores."""
    from wan.text_encoder_config import text_encoder_preset

    p = text_encoder_preset(preset)
    return text_len * (4 * p.d_model + 2 * p.d_ff) * dtype.itemsize + p.num_heads * text_len * text_len * 4


def vae_bytes(preset: str, dtype: torch.dtype) -> int:
    from wan.vae import WanVAE, vae_preset

    with torch.device("meta"):
        return _param_bytes(WanVAE(vae_preset(preset)).to(dtype))


def vae_decode_bytes(preset: str, cfg: GenerationConfig, dtype: torch.dtype) -> int:
    """Estimate: the decoder's live full-resolution tensors for one latent frame, plus one decoded chunk in fp32."""
    from wan.vae import vae_preset

    pixels = cfg.latent_height * 8 * cfg.latent_width * 8
    per_frame = VAE_LIVE_TENSORS * VIDEO_FRAMES_PER_LATENT * vae_preset(preset).base_dim * pixels * dtype.itemsize
    return per_frame + 3 * VIDEO_FRAMES_PER_LATENT * cfg.vae.decode_chunk_frames * pixels * 4


def ae_encoder_bytes(cfg: GenerationConfig, frame: tuple[int, int, int]) -> int:
    """The retrieval encoder in float32 (its decoder is never loaded): the checkpoint's layout when the file
    exists, else the paper's (ae/configs/base_ae.yaml), else the demo's."""
    from ae.model import AEConfig, Encoder
    from pipeline.build import DEMO_AE_HIDDEN_DIMS, DEMO_AE_LATENT_DIM

    path = cfg.model_kwargs.ae_ckpt
    c, h, w = frame
    if path is not None and Path(path).is_file():
        ckpt = load_checkpoint(path, "retrieval encoder (model_kwargs.ae_ckpt)", "download it again", mmap=True)
        ae_cfg = AEConfig.from_dict({k: v for k, v in ckpt["config"].items() if k in {f.name for f in fields(AEConfig)}})
    elif path is not None:
        ae_cfg = AEConfig(in_channels=c, spatial_h=h, spatial_w=w, latent_dim=1024, hidden_dims=(64, 128, 256))
    else:
        ae_cfg = AEConfig(in_channels=c, spatial_h=h, spatial_w=w, latent_dim=DEMO_AE_LATENT_DIM, hidden_dims=DEMO_AE_HIDDEN_DIMS)
    with torch.device("meta"):
        return _param_bytes(Encoder(ae_cfg))


def kv_frame_bytes(mcfg: WanModelConfig, geometry: LatentGeometry, dtype: torch.dtype) -> int:
    """K and V of one latent frame in every layer."""
    return mcfg.num_layers * 2 * geometry.tokens_per_frame * mcfg.dim * dtype.itemsize


def bank_items(cfg: GenerationConfig, mcfg: WanModelConfig, geometry: LatentGeometry, dev: str, dtype: torch.dtype) -> list[PlanItem]:
    """The history bank at its largest: the whole video's evicted frames, or the budget's frames (K/V plus the
    float8 scales, and the clean latents a re-encoding switch policy keeps, counted in the budget as the bank
    does), on its tier; the disk tier is checked against its folder's free space (latents stay in host memory)."""
    mk = cfg.model_kwargs
    bank_dtype = resolve_dtype(mk.memory_dtype, dtype)
    latent_shape = geometry.frame_shape if MEMORY_SWITCH_POLICIES[mk.memory_switch_policy].keeps_latents else None
    kv = frame_bytes(mcfg.num_layers, 1, geometry.tokens_per_frame, mcfg.num_heads, mcfg.head_dim, bank_dtype)
    per_frame = frame_bytes(mcfg.num_layers, 1, geometry.tokens_per_frame, mcfg.num_heads, mcfg.head_dim, bank_dtype, latent_shape)
    budget, frames = bank_capacity(mk, cfg.num_output_frames, per_frame)
    smaller = "model_kwargs.memory_budget_gb" if budget is None else "a smaller model_kwargs.memory_budget_gb"
    if bank_dtype.itemsize > 1:
        smaller += ", model_kwargs.memory_dtype=float8_e4m3fn"
    if mk.memory_device == "disk":
        device, fix, latent_device = f"{DISK}{mk.memory_folder}", f"{smaller} or a model_kwargs.memory_folder with more room", "cpu"
    else:
        device = latent_device = dev if mk.memory_device == "auto" else mk.memory_device
        fix = f"model_kwargs.memory_device=cpu, {smaller}" if torch.device(device).type == "cuda" else smaller
    auto = smaller if mk.memory_device == "auto" and torch.device(device).type == "cuda" else None
    items = [PlanItem(f"history bank ({frames} frames)", device, frames * kv, ("rollout",), fix, auto_host_fix=auto)]
    if latent_shape is not None:  # float32 clean latents, to re-encode entries
        items.append(PlanItem(f"history bank latents ({frames} frames)", latent_device, frames * (per_frame - kv), ("rollout",),
                              "model_kwargs.memory_switch_policy=scoped", auto_host_fix=auto and "model_kwargs.memory_switch_policy=scoped"))
    return items


def resolve_auto_tier(items: list[PlanItem], free: dict[str, float], total: dict[str, float]) -> list[PlanItem]:
    """`memory_device: auto` as the run resolves it (pipeline/bank_storage.py `choose_tier`): the bank stays on an
    accelerator only when that device's rollout phase fits its free memory with headroom; otherwise it is
    planned in host memory."""
    for dev in {i.device for i in items if i.auto_host_fix is not None}:
        rollout = sum(i.nbytes for i in items if i.device == dev and "rollout" in i.phases)
        if not fits_with_headroom(rollout, free[dev], total[dev]):
            items = [replace(i, device="cpu", component=f"{i.component} (auto: host)", fix=i.auto_host_fix, auto_host_fix=None)
                     if i.device == dev and i.auto_host_fix is not None else i for i in items]
    return items


def rollout_activation_bytes(cfg: GenerationConfig, mcfg: WanModelConfig, geometry: LatentGeometry,
                             dtype: torch.dtype, device: torch.device) -> int:
    """Estimate of one block's working memory: the assembled context K/V of every layer (kept for the block's
    calls), the text K/V, one layer's hidden states and FFN, attention scores where no fused kernel runs (CPU),
    and the video's noise and latents."""
    mk = cfg.model_kwargs
    tokens = geometry.tokens(cfg.num_frame_per_block)
    context = kv_frame_bytes(mcfg, geometry, dtype) * mk.local_attn_size
    text = mcfg.num_layers * 2 * mcfg.text_len * mcfg.dim * dtype.itemsize
    layer = tokens * (mcfg.ffn_dim + 8 * mcfg.dim) * dtype.itemsize
    scores = mcfg.num_heads * tokens * geometry.tokens(mk.local_attn_size) * 4 if device.type == "cpu" else 0
    latents = cfg.num_output_frames * mcfg.in_dim * cfg.latent_height * cfg.latent_width * 2 * 4  # noise, clean: float32
    return context + text + layer + scores + latents


def memory_plan(cfg: GenerationConfig, device: torch.device, dtype: torch.dtype,
                keep_text_encoder: bool = False) -> list[PlanItem]:
    """Every component of a run of `cfg` on `device` in `dtype`, with its phases. `keep_text_encoder`: the live
    app's plan, where prompts are typed while the video streams, so the encoder is loaded in every phase."""
    mcfg, mk = model_preset(cfg.model_preset), cfg.model_kwargs
    geometry = LatentGeometry.of(mcfg, cfg.latent_height, cfg.latent_width)
    dev = str(device)
    steady = ("rollout", "decode")
    lower = "dtype=bfloat16" if dtype == torch.float32 else "a device with more free memory"
    text_phases, text_fix = (PHASES, lower) if keep_text_encoder else (("encode prompts",), f"{lower} (it is released before the rollout)")
    items = [
        PlanItem("text encoder", dev, text_encoder_bytes(cfg.text_encoder.preset, dtype), text_phases, text_fix),
        PlanItem("text encoder activations", dev, text_activation_bytes(cfg.text_encoder.preset, mcfg.text_len, dtype),
                 text_phases, lower, estimate=True),
        PlanItem("DiT weights", dev, dit_bytes(mcfg, dtype), ("load", *steady), lower),
    ]
    if cfg.adapter is not None:
        merged = cfg.adapter.merge
        items.append(PlanItem("LoRA" + (" (merged at load)" if merged else ""), dev,
                              lora_bytes(mcfg, cfg.adapter.rank, dtype), ("load",) if merged else ("load", *steady),
                              "adapter.merge=true" if not merged else lower))
    if cfg.uses_encoder:
        items.append(PlanItem("retrieval AE encoder", dev, ae_encoder_bytes(cfg, geometry.frame_shape), steady,
                              "model_kwargs.compression_method=avg_pool"))
    items += [
        PlanItem("VAE", dev, vae_bytes(cfg.vae.preset, dtype), steady, lower),
        PlanItem("KV cache", dev, kv_frame_bytes(mcfg, geometry, dtype) * mk.local_attn_size, ("rollout",),
                 "model_kwargs.local_attn_size"),
    ]
    if cfg.uses_bank:
        items += bank_items(cfg, mcfg, geometry, dev, dtype)
    items += [
        PlanItem("rollout activations", dev, rollout_activation_bytes(cfg, mcfg, geometry, dtype, device), ("rollout",),
                 lower, estimate=True),
        PlanItem("VAE decoding", dev, vae_decode_bytes(cfg.vae.preset, cfg, dtype), ("decode",),
                 "vae.decode_chunk_frames=1", estimate=True),
    ]
    return items


def peak(items: list[PlanItem], device: str) -> tuple[int, str]:
    """(bytes, phase) of the largest phase on `device`."""
    totals = {phase: sum(i.nbytes for i in items if i.device == device and phase in i.phases) for phase in PHASES}
    phase = max(totals, key=totals.get)
    return totals[phase], phase


def devices(items: list[PlanItem]) -> list[str]:
    return list(dict.fromkeys(i.device for i in items))


def format_plan(items: list[PlanItem]) -> str:
    lines = ["memory plan (~: estimate):"]
    for dev in devices(items):
        total, phase = peak(items, dev)
        lines.append(f"  {dev}: peak {total / GB:.2f} GB ({phase})")
        for i in items:
            if i.device == dev:
                lines.append(f"    {i.component:<28} {'~' if i.estimate else ' '}{i.nbytes / GB:8.3f} GB  [{', '.join(i.phases)}]")
    return "\n".join(lines)


def free_bytes(device: str) -> int:
    """Free memory of `device`: available RAM for the CPU, torch.cuda.mem_get_info for a GPU, free space of the
    disk tier's folder (or of its nearest existing parent, where the folder will be made)."""
    if device.startswith(DISK):
        folder = Path(device.removeprefix(DISK)).absolute()
        while not folder.exists():
            folder = folder.parent
        return shutil.disk_usage(folder).free
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.mem_get_info(dev)[0]
    return host_available_bytes()


def total_bytes(device: str) -> int:
    """Total memory of an accelerator (what the bank's headroom is a share of)."""
    return torch.cuda.mem_get_info(torch.device(device))[1]


def check_fits(items: list[PlanItem], free: dict[str, int]) -> None:
    """Raise MemoryPlanError when a device's largest phase exceeds its free memory, naming the largest
    component of that phase and the option that shrinks it."""
    for dev in devices(items):
        total, phase = peak(items, dev)
        if total <= free[dev]:
            continue
        biggest = max((i for i in items if i.device == dev and phase in i.phases), key=lambda i: i.nbytes)
        raise MemoryPlanError(
            f"the run needs {total / GB:.2f} GB on {dev} ({phase} phase) but {free[dev] / GB:.2f} GB are free; "
            f"the largest part is the {biggest.component} ({biggest.nbytes / GB:.2f} GB): set {biggest.fix}")


def plan_run(cfg: GenerationConfig, device: torch.device, dtype: torch.dtype, show: bool,
             keep_text_encoder: bool = False) -> list[PlanItem]:
    """Print the plan (when `show`) and refuse before loading anything if it does not fit."""
    items = memory_plan(cfg, device, dtype, keep_text_encoder)
    auto = {i.device for i in items if i.auto_host_fix is not None}
    items = resolve_auto_tier(items, {dev: free_bytes(dev) for dev in auto}, {dev: total_bytes(dev) for dev in auto})
    if show:
        print(format_plan(items), flush=True)
    check_fits(items, {dev: free_bytes(dev) for dev in devices(items)})
    return items


def gpu_verdict_plan(items: list[PlanItem], gb: float) -> list[PlanItem]:
    """The plan on an empty GPU of `gb` GB, with `memory_device: auto` resolved for it."""
    gpus = {i.device for i in items if i.device.startswith("cuda")}
    return resolve_auto_tier(items, dict.fromkeys(gpus, gb * GB), dict.fromkeys(gpus, gb * GB))


def main(argv: list[str] | None = None) -> int:
    from utils.config import load_config

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a generation config, e.g. configs/longlive_latentmem.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    parser.add_argument("--device", default="cuda", help="device the plan is for (default cuda)")
    parser.add_argument("--dtype", default="bfloat16", help="compute dtype (default bfloat16)")
    parser.add_argument("--gpu-gb", type=float, nargs="*", default=[24, 48, 80], help="GPU sizes for the verdicts")
    parser.add_argument("--live", action="store_true", help="the live app's plan (app.sh): the text encoder stays loaded")
    args = parser.parse_args(argv)
    from inference_job.config import InferenceConfig

    try:
        cfg = load_config(InferenceConfig, args.config, args.overrides)
    except ConfigError as err:
        print(f"error: {err}")
        return 2
    items = memory_plan(cfg, torch.device(args.device), resolve_dtype(args.dtype, torch.bfloat16), args.live)
    print(format_plan(items))
    for gb in args.gpu_gb:
        sized = gpu_verdict_plan(items, gb)
        moved = [i.component for i in sized if i.component.endswith("(auto: host)")]
        where = f" ({', '.join(moved)}: {sum(i.nbytes for i in sized if i.component in moved) / GB:.2f} GB of host memory)" if moved else ""
        try:
            check_fits(sized, {dev: gb * GB if dev.startswith("cuda") else float("inf") for dev in devices(sized)})
            print(f"{gb:g} GB GPU: fits{where}")
        except MemoryPlanError as err:
            print(f"{gb:g} GB GPU: does not fit: {err}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
