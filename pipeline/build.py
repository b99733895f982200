"""The one loading module of every entry script: generator (+EMA, +LoRA), text encoder, VAE,
retrieval rule and context method, built from a GenerationConfig (pipeline/generation_config.py);
replay builds through the same loaders.

The context method (`method`), the retrieval rule (`compression_method`) and the retrieval memory's
behaviour at a prompt switch (`memory_switch_policy`) are chosen here, once;
nothing below compares their names.

Random weights exist only for the `demo` presets and only when no weights path is given; every
other missing file raises MissingAssetError with the download command. Nothing ever falls back
to another method (e.g. a missing retrieval encoder never turns `ae` into `avg_pool`).
"""
from __future__ import annotations

import gc
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from ae.model import AEConfig, RetrievalAutoencoder, load_retrieval_autoencoder
from pipeline.context.deepforcing import AttentionScore, DeepForcingPolicy
from pipeline.context.infrope import InfRopePolicy
from pipeline.context.latentmem import LatentMemPolicy
from pipeline.context.native import NativePolicy
from pipeline.context.policy import PolicyFactory
from pipeline.context.window_recache import SwitchOptions
from pipeline.descriptors import AvgPoolDescriptor, EncoderDescriptor
from pipeline.generation_config import AdapterConfig, GenerationConfig
from pipeline.memory_switch import MEMORY_SWITCH_POLICIES
from pipeline.prompt_schedule import PromptFormat, PromptSchedule
from pipeline.retrieval import RandomRetrieval, Retrieval, TopKRetrieval
from pipeline.rollout_config import ModelKwargs, RolloutConfig
from utils.assets import RAG_DOWNLOAD, WAN_DOWNLOAD, MissingAssetError, released_download
from pipeline.memory_plan import plan_run
from utils.distributed import DistInfo, rank_device
from utils.locks import check_writable_folder, hold_folder
from utils.dtypes import compute_dtype
from utils.seeding import DEMO_SEED, seed_everything, seeded
from utils.settings import file_fingerprint
from wan.checkpoint import load_backbone_checkpoint
from wan.lora import apply_lora
from wan.model import CausalWanModel
from wan.model_config import WanModelConfig, model_preset
from wan.text_encoder_config import default_tokenizer_dir

if TYPE_CHECKING:  # transformers and diffusers load in the builders, so --help and config errors stay fast
    from wan.text_encoder import EncodedPrompts, WanTextEncoder
    from wan.vae import WanVAE

# The demo retrieval encoder: the fixtures' tiny AE layout (two stages fit an 8 x 8 latent frame).
DEMO_AE_HIDDEN_DIMS = (8, 16)
DEMO_AE_LATENT_DIM = 32


class ComponentMismatchError(ValueError):
    """Two loaded components do not fit together (e.g. the retrieval encoder's frame size)."""


@dataclass
class InferenceComponents:
    generator: CausalWanModel
    prompts: EncodedPrompts  # the run's prompts, encoded before the generator was loaded
    vae: WanVAE
    method: ContextMethod


def random_weight_components(cfg: GenerationConfig) -> list[str]:
    """Components that this config builds with random weights (demo presets without weights)."""
    names = []
    if cfg.generator_ckpt is None:
        names.append("generator")
    if cfg.text_encoder.weights is None:
        names.append("text encoder")
    if cfg.vae.checkpoint is None:
        names.append("VAE")
    if cfg.uses_encoder and cfg.model_kwargs.ae_ckpt is None:
        names.append("retrieval encoder")
    return names


def random_weight_label(random_components: list[str]) -> str | None:
    """The banner of runs with random weights (None for a run on real weights)."""
    if not random_components:
        return None
    return (f"RANDOM-WEIGHT DEMO: {', '.join(random_components)} have random weights. The videos show the "
            "pipeline and its output files, not the quality of any backbone or of retrieval.")


def required_assets(cfg: GenerationConfig) -> list[tuple[str, str, str | None]]:
    """(path, what, download command or None for the user's own files) of every file the config reads."""
    mk, te = cfg.model_kwargs, cfg.text_encoder
    assets = [
        (cfg.generator_ckpt, "backbone checkpoint (generator_ckpt)", RAG_DOWNLOAD),
        (cfg.lora_ckpt, "LoRA checkpoint (lora_ckpt)", RAG_DOWNLOAD),
        (mk.ae_ckpt if cfg.uses_encoder else None, "retrieval encoder (model_kwargs.ae_ckpt)", RAG_DOWNLOAD),
        (cfg.data_path, "prompt file (data_path)", released_download(cfg.data_path) if cfg.data_path else None),
        (te.weights, "text encoder weights (text_encoder.weights)", WAN_DOWNLOAD),
        (te.tokenizer if te.tokenizer is not None or te.weights is None else str(default_tokenizer_dir(te.weights)),
         "tokenizer folder (text_encoder.tokenizer)", WAN_DOWNLOAD),
        (cfg.vae.checkpoint, "VAE checkpoint (vae.checkpoint)", WAN_DOWNLOAD),
    ]
    return [(path, what, download) for path, what, download in assets if path is not None]


def weight_fingerprints(cfg: GenerationConfig) -> dict[str, dict | None]:
    """Path, size and mtime of every weights file the config loads (None: random demo weights), by config key."""
    mk = cfg.model_kwargs
    weights = {"generator_ckpt": cfg.generator_ckpt, "lora_ckpt": cfg.lora_ckpt,
               "model_kwargs.ae_ckpt": mk.ae_ckpt if cfg.uses_encoder else None,
               "text_encoder.weights": cfg.text_encoder.weights, "vae.checkpoint": cfg.vae.checkpoint}
    return {key: file_fingerprint(path) for key, path in weights.items()}


def require_assets(cfg: GenerationConfig) -> None:
    """Fail before loading anything if a file is missing, listing every missing file and its download."""
    missing = [(path, what, download) for path, what, download in required_assets(cfg) if not Path(path).exists()]
    if missing:
        lines = [f"  {what}: '{path}'" for path, what, _ in missing]
        downloads = sorted({download for _, _, download in missing if download is not None})
        hint = ("\nDownload them with:\n" + "\n".join(f"    {d}" for d in downloads)) if downloads else ""
        if any(download is None for _, _, download in missing):
            hint += "\nYour own files: data_path is a text file with one prompt per line."
        raise MissingAssetError("missing files:\n" + "\n".join(lines) + hint)


def load_generator(mcfg: WanModelConfig, ckpt: str | Path | None, device: torch.device, dtype: torch.dtype,
                   use_ema: bool = False, lora_ckpt: str | Path | None = None,
                   adapter: AdapterConfig | None = None) -> CausalWanModel:
    """The causal DiT in eval mode: checkpoint (EMA if use_ema) + LoRA (merged unless adapter.merge is
    false), or random weights from DEMO_SEED without a checkpoint (the config allows that for demo only)."""
    if ckpt is None:
        with seeded(DEMO_SEED):
            model = CausalWanModel(mcfg)
        model = model.to(device).to_inference_dtype(dtype)
    else:
        # Built without memory, then filled by the strict load: every parameter comes from the file.
        with torch.device("meta"):
            model = CausalWanModel(mcfg).to_inference_dtype(dtype)
        model = model.to_empty(device=device)
        load_backbone_checkpoint(model, ckpt, use_ema=use_ema)
    if lora_ckpt is not None:
        model = apply_lora(model, lora_ckpt, adapter.rank, adapter.alpha, merge=adapter.merge)
    return model.eval().requires_grad_(False)


def build_generator(cfg: GenerationConfig, mcfg: WanModelConfig, device: torch.device, dtype: torch.dtype) -> CausalWanModel:
    return load_generator(mcfg, cfg.generator_ckpt, device, dtype, cfg.use_ema, cfg.lora_ckpt, cfg.adapter)


def build_text_encoder(cfg: GenerationConfig, mcfg: WanModelConfig, device: torch.device, dtype: torch.dtype) -> WanTextEncoder:
    from wan.text_encoder import WanTextEncoder

    te = cfg.text_encoder
    return WanTextEncoder.from_preset(te.preset, te.weights, te.tokenizer, device, dtype, mcfg.text_len)


def encode_prompts(cfg: GenerationConfig, mcfg: WanModelConfig, prompts: list[str], device: torch.device,
                   dtype: torch.dtype) -> EncodedPrompts:
    """Encode `prompts`, then release the text encoder and its memory (11.4 GB for UMT5-XXL in bf16)
    before anything else is loaded: the encoder never shares the device with the rollout."""
    encoder = build_text_encoder(cfg, mcfg, device, dtype)
    encoded = encoder.encode_all(prompts)
    del encoder
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return encoded


def build_vae(cfg: GenerationConfig, device: torch.device, dtype: torch.dtype) -> WanVAE:
    from wan.vae import WanVAE

    return WanVAE.from_preset(cfg.vae.preset, cfg.vae.checkpoint, device, dtype)


def load_autoencoder(path: str | Path | None, frame: tuple[int, int, int], device: torch.device) -> RetrievalAutoencoder:
    """The retrieval AE's encoder half for latent frames `frame` (C, H, W) in float32 (descriptors only rank bank
    entries; fp32 keeps near-ties stable); without a path, the random tiny demo encoder. `decode` is unavailable."""
    if path is None:
        ae_cfg = AEConfig(in_channels=frame[0], spatial_h=frame[1], spatial_w=frame[2],
                          latent_dim=DEMO_AE_LATENT_DIM, hidden_dims=DEMO_AE_HIDDEN_DIMS)
        with seeded(DEMO_SEED):
            ae = RetrievalAutoencoder(ae_cfg)
    else:
        ae = load_retrieval_autoencoder(path, "cpu", torch.float32)
    ae.decoder = None  # retrieval only encodes: the decoder (27 M parameters at full size) never reaches the device
    ae_frame = (ae.cfg.in_channels, ae.cfg.spatial_h, ae.cfg.spatial_w)
    if ae_frame != tuple(frame):
        raise ComponentMismatchError(
            f"retrieval encoder '{path}' was trained on latent frames {list(ae_frame)} but this config generates "
            f"{list(frame)} (model in_dim, latent_height, latent_width); use an encoder trained at this size")
    return ae.to(device=device, dtype=torch.float32).eval().requires_grad_(False)


def retrieval_rule(name: str, encoder: Callable[[], RetrievalAutoencoder]) -> Retrieval:
    """The retrieval rule `name` (ae | avg_pool | random); `encoder` loads the AE, called only for `ae`."""
    if name == "ae":
        return TopKRetrieval(EncoderDescriptor(encoder()), name)
    if name == "avg_pool":
        return TopKRetrieval(AvgPoolDescriptor(), name)
    return RandomRetrieval()


def load_retrieval(mk: ModelKwargs, frame: tuple[int, int, int], device: torch.device) -> Retrieval:
    """The retrieval rule of `mk.compression_method` for latent frames `frame` (C, H, W)."""
    return retrieval_rule(mk.compression_method, lambda: load_autoencoder(mk.ae_ckpt, frame, device))


@dataclass(frozen=True)
class ContextMethod:
    """A context method as the loop uses it: its policy factory and how it reads a prompt line."""

    name: str  # for logs and plot titles only
    policy: PolicyFactory
    parse_prompt: Callable[[str], PromptSchedule]


def build_context_method(cfg: RolloutConfig, retrieval: Callable[[], Retrieval],
                         switch_frame_indices: list[int] | None = None) -> ContextMethod:
    """The one place a method name becomes behaviour; `retrieval` is called only for latentmem.
    switch_frame_indices: prompt lines are LongLive's JSONL records (pipeline/prompt_schedule.py)."""
    mk, nf = cfg.model_kwargs, cfg.num_frame_per_block
    window = dict(window=mk.local_attn_size, sink_size=mk.sink_size)
    switch = SwitchOptions(kv_recache=mk.kv_recache, global_sink=mk.global_sink, global_sink_always=mk.global_sink_always,
                           causal=mk.switch_recache_causal)
    indices = None if switch_frame_indices is None else tuple(switch_frame_indices)
    parse = PromptFormat(nf, indices).parse
    if cfg.method == "native":
        policy = partial(NativePolicy, **window, switch=switch)
    elif cfg.method == "latentmem":
        policy = partial(
            LatentMemPolicy, **window, memory_size=mk.memory_size, recent_exclude=mk.recent_exclude, retrieval=retrieval(),
            bank=mk, memory_switch=MEMORY_SWITCH_POLICIES[mk.memory_switch_policy](), switch=switch)
    elif cfg.method == "infrope":
        policy = partial(InfRopePolicy, **window, cut_position=mk.infrope_cut_position, flush_newest=mk.infrope_flush_newest,
                         flush_after_sink=mk.infrope_flush_after_sink)
        parse = PromptFormat(nf, indices, every_line=True, cut_from_ending_scene=not mk.infrope_cut_on_marked_scene).parse
    elif cfg.method == "deepforcing":
        policy = partial(DeepForcingPolicy, **window, recent=mk.df_recent, scorer=AttentionScore(probabilities=mk.df_score == "softmax"),
                         current_queries=mk.df_score_queries != "clean", clean_queries=mk.df_score_queries != "current",
                         hysteresis=mk.df_hysteresis, switch=switch)
    else:
        raise ValueError(f"unknown method '{cfg.method}'; choose one of native, latentmem, infrope, deepforcing")
    return ContextMethod(cfg.method, policy, parse)


def build_method(cfg: GenerationConfig, mcfg: WanModelConfig, device: torch.device) -> ContextMethod:
    frame = (mcfg.in_dim, cfg.latent_height, cfg.latent_width)
    return build_context_method(cfg, lambda: load_retrieval(cfg.model_kwargs, frame, device), cfg.switch_frame_indices)


@dataclass
class RunSetup:
    device: torch.device
    dtype: torch.dtype
    random_components: list[str]  # built with random weights (demo presets)


def prepare_run(cfg: GenerationConfig, info: DistInfo, keep_text_encoder: bool = False) -> RunSetup:
    """This rank's device and dtype; the random-weight banner and the memory plan (main rank); every file
    checked and the plan checked against free memory; seeds set. `keep_text_encoder`: the plan of the live
    app, whose text encoder stays loaded beside the generator.

    Nothing is loaded yet, so a missing file or a run that cannot fit fails in seconds."""
    device = rank_device(cfg.device, info)
    random_components = random_weight_components(cfg)
    if info.is_main and random_components:
        print(random_weight_label(random_components), flush=True)
    require_assets(cfg)
    dtype = compute_dtype(cfg.dtype, device)
    plan_run(cfg, device, dtype, show=info.is_main, keep_text_encoder=keep_text_encoder)
    seed_everything(cfg.seed)
    return RunSetup(device, dtype, random_components)


def build_components(cfg: GenerationConfig, device: torch.device, dtype: torch.dtype, prompts: list[str]) -> InferenceComponents:
    """Everything a run on `prompts` needs (files were checked by prepare_run). The context method is built
    first: its retrieval encoder is small and fails fast on a bad ae_ckpt. Every prompt segment is encoded and
    the text encoder released before the generator loads (pipeline/memory_plan.py counts them as separate phases)."""
    mcfg = model_preset(cfg.model_preset)
    method = build_method(cfg, mcfg, device)
    segments = sorted({text for line in prompts for text in method.parse_prompt(line).prompts})
    encoded = encode_prompts(cfg, mcfg, segments, device, dtype)
    return InferenceComponents(
        generator=build_generator(cfg, mcfg, device, dtype),
        prompts=encoded,
        vae=build_vae(cfg, device, dtype),
        method=method,
    )


@dataclass
class LiveComponents:
    """What the live app (live/) generates with: like InferenceComponents, but the text encoder stays loaded
    to encode the prompts typed while the video streams (the memory plan counts it in every phase)."""

    generator: CausalWanModel
    text_encoder: WanTextEncoder
    vae: WanVAE
    method: ContextMethod


def build_live_components(cfg: GenerationConfig, device: torch.device, dtype: torch.dtype) -> LiveComponents:
    """The components of a live session (files were checked by prepare_run with keep_text_encoder)."""
    mcfg = model_preset(cfg.model_preset)
    return LiveComponents(
        generator=build_generator(cfg, mcfg, device, dtype),
        text_encoder=build_text_encoder(cfg, mcfg, device, dtype),
        vae=build_vae(cfg, device, dtype),
        method=build_method(cfg, mcfg, device),
    )


def run_in_output_folder(cfg: GenerationConfig, info: DistInfo, body: Callable[[GenerationConfig, DistInfo, RunSetup], None]) -> None:
    """Check and lock `output_folder` before anything loads (a second run in it refuses instead of deleting
    the first run's in-flight files), prepare the run, then run `body` under the lock."""
    check_writable_folder(cfg.output_folder, "output_folder")
    setup = prepare_run(cfg, info)
    with hold_folder(cfg.output_folder, "output_folder", enabled=info.is_main):
        body(cfg, info, setup)
