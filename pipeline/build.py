"""The one loading module of every entry script: generator (+EMA, +LoRA), text encoder, VAE,
retrieval rule and context method, built from an InferenceConfig.

The context method (`method`) and the retrieval rule (`compression_method`) are chosen here, once;
nothing below compares their names.

Random weights exist only for the `demo` presets and only when no weights path is given; every
other missing file raises MissingAssetError with the download command. Nothing ever falls back
to another method (e.g. a missing retrieval encoder never turns `ae` into `avg_pool`).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import torch

from ae.model import AEConfig, RetrievalAutoencoder, load_retrieval_autoencoder
from pipeline.context.deepforcing import AttentionScore, DeepForcingPolicy
from pipeline.context.infrope import InfRopePolicy
from pipeline.context.latentmem import LatentMemPolicy
from pipeline.context.native import NativePolicy
from pipeline.context.policy import PolicyFactory
from pipeline.descriptors import AvgPoolDescriptor, EncoderDescriptor
from pipeline.inference_config import InferenceConfig
from pipeline.prompt_schedule import PromptSchedule, parse_infrope_prompt
from pipeline.retrieval import RandomRetrieval, Retrieval, TopKRetrieval
from pipeline.rollout_config import RolloutConfig
from wan.checkpoint import load_backbone_checkpoint
from wan.lora import apply_lora
from wan.model import CausalWanModel
from wan.model_config import model_preset
from utils.assets import RAG_DOWNLOAD, WAN_DOWNLOAD, MissingAssetError
from wan.text_encoder_config import default_tokenizer_dir

if TYPE_CHECKING:  # transformers and diffusers load in the builders, so --help and config errors stay fast
    from wan.text_encoder import WanTextEncoder
    from wan.vae import WanVAE

DEMO_SEED = 0  # seed of every random-weight demo component
# The demo retrieval encoder: the fixtures' tiny AE layout (two stages fit an 8 x 8 latent frame).
DEMO_AE_HIDDEN_DIMS = (8, 16)
DEMO_AE_LATENT_DIM = 32


class ComponentMismatchError(ValueError):
    """Two loaded components do not fit together (e.g. the retrieval encoder's frame size)."""


@dataclass
class InferenceComponents:
    generator: CausalWanModel
    text_encoder: WanTextEncoder
    vae: WanVAE
    method: ContextMethod


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Deterministic CPU initialisation that leaves the caller's RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` is bfloat16 on CUDA and float32 on CPU."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def random_weight_components(cfg: InferenceConfig) -> list[str]:
    """Components that this config builds with random weights (demo presets without weights)."""
    names = []
    if cfg.generator_ckpt is None:
        names.append("generator")
    if cfg.text_encoder.weights is None:
        names.append("text encoder")
    if cfg.vae.checkpoint is None:
        names.append("VAE")
    mk = cfg.model_kwargs
    if mk.use_latentmem and mk.compression_method == "ae" and mk.ae_ckpt is None:
        names.append("retrieval encoder")
    return names


def required_assets(cfg: InferenceConfig) -> list[tuple[str, str, str]]:
    """(path, what, download command) of every file the config reads."""
    mk, te = cfg.model_kwargs, cfg.text_encoder
    assets = [
        (cfg.generator_ckpt, "backbone checkpoint (generator_ckpt)", RAG_DOWNLOAD),
        (cfg.lora_ckpt, "LoRA checkpoint (lora_ckpt)", RAG_DOWNLOAD),
        (mk.ae_ckpt if mk.use_latentmem and mk.compression_method == "ae" else None,
         "retrieval encoder (model_kwargs.ae_ckpt)", RAG_DOWNLOAD),
        (cfg.data_path, "prompt file (data_path)", RAG_DOWNLOAD),
        (te.weights, "text encoder weights (text_encoder.weights)", WAN_DOWNLOAD),
        (te.tokenizer if te.tokenizer is not None or te.weights is None else str(default_tokenizer_dir(te.weights)),
         "tokenizer folder (text_encoder.tokenizer)", WAN_DOWNLOAD),
        (cfg.vae.checkpoint, "VAE checkpoint (vae.checkpoint)", WAN_DOWNLOAD),
    ]
    return [(path, what, download) for path, what, download in assets if path is not None]


def require_assets(cfg: InferenceConfig) -> None:
    """Fail before loading anything if a file is missing, listing every missing file and its download."""
    missing = [(path, what, download) for path, what, download in required_assets(cfg) if not Path(path).exists()]
    if missing:
        lines = [f"  {what}: '{path}'" for path, what, _ in missing]
        downloads = sorted({download for _, _, download in missing})
        raise MissingAssetError("missing files:\n" + "\n".join(lines) + "\nDownload them with:\n"
                                + "\n".join(f"    {d}" for d in downloads))


def build_generator(cfg: InferenceConfig, device: torch.device, dtype: torch.dtype) -> CausalWanModel:
    """The causal DiT in eval mode: checkpoint (EMA if use_ema) + LoRA (merged unless adapter.merge is
    false), or random weights from DEMO_SEED for the demo preset without a checkpoint."""
    mcfg = model_preset(cfg.model_preset)
    if cfg.generator_ckpt is None:
        with _seeded(DEMO_SEED):
            model = CausalWanModel(mcfg)
        model = model.to(device=device, dtype=dtype)
    else:
        # Built without memory, then filled by the strict load: every parameter comes from the file.
        with torch.device("meta"):
            model = CausalWanModel(mcfg).to(dtype)
        model = model.to_empty(device=device)
        load_backbone_checkpoint(model, cfg.generator_ckpt, use_ema=cfg.use_ema, strict=True)
    if cfg.lora_ckpt is not None:
        model = apply_lora(model, cfg.lora_ckpt, cfg.adapter.rank, cfg.adapter.alpha, merge=cfg.adapter.merge)
    return model.eval().requires_grad_(False)


def build_text_encoder(cfg: InferenceConfig, device: torch.device, dtype: torch.dtype) -> WanTextEncoder:
    from wan.text_encoder import WanTextEncoder

    te = cfg.text_encoder
    text_len = model_preset(cfg.model_preset).text_len
    return WanTextEncoder.from_preset(te.preset, te.weights, te.tokenizer, device, dtype, text_len)


def build_vae(cfg: InferenceConfig, device: torch.device, dtype: torch.dtype) -> WanVAE:
    from wan.vae import WanVAE

    return WanVAE.from_preset(cfg.vae.preset, cfg.vae.checkpoint, device, dtype)


def demo_autoencoder(cfg: InferenceConfig) -> RetrievalAutoencoder:
    """Random tiny retrieval encoder sized to the config's latent frames."""
    ae_cfg = AEConfig(in_channels=model_preset(cfg.model_preset).in_dim, spatial_h=cfg.latent_height,
                      spatial_w=cfg.latent_width, latent_dim=DEMO_AE_LATENT_DIM, hidden_dims=DEMO_AE_HIDDEN_DIMS)
    with _seeded(DEMO_SEED):
        return RetrievalAutoencoder(ae_cfg)


def build_autoencoder(cfg: InferenceConfig, device: torch.device) -> RetrievalAutoencoder:
    """The retrieval AE in float32 (descriptors only rank bank entries; fp32 keeps near-ties stable)."""
    path = cfg.model_kwargs.ae_ckpt
    ae = demo_autoencoder(cfg) if path is None else load_retrieval_autoencoder(path, device, torch.float32)
    frame = (model_preset(cfg.model_preset).in_dim, cfg.latent_height, cfg.latent_width)
    ae_frame = (ae.cfg.in_channels, ae.cfg.spatial_h, ae.cfg.spatial_w)
    if ae_frame != frame:
        raise ComponentMismatchError(
            f"retrieval encoder '{path}' was trained on latent frames {list(ae_frame)} but this config generates "
            f"{list(frame)} (model in_dim, latent_height, latent_width); use an encoder trained at this size")
    return ae.to(device=device, dtype=torch.float32).eval().requires_grad_(False)


def build_retrieval(name: str, load_encoder: Callable[[], RetrievalAutoencoder]) -> Retrieval:
    """The retrieval rule of `compression_method`; `load_encoder` is called only for `ae`."""
    if name == "ae":
        return TopKRetrieval(EncoderDescriptor(load_encoder()), name)
    if name == "avg_pool":
        return TopKRetrieval(AvgPoolDescriptor(), name)
    return RandomRetrieval()


@dataclass(frozen=True)
class ContextMethod:
    """A context method as the loop uses it: its policy factory and how it reads a prompt line."""

    name: str  # for logs and file titles only
    policy: PolicyFactory
    parse_prompt: Callable[[str], PromptSchedule]


def _storage_dtype(name: str) -> torch.dtype | None:
    return None if name == "auto" else getattr(torch, name)


def build_context_method(cfg: RolloutConfig, retrieval: Callable[[], Retrieval]) -> ContextMethod:
    """The one place a method name is turned into behaviour. `retrieval` is called only for latentmem."""
    window, sink, nf = cfg.local_attn_size, cfg.sink_size, cfg.num_frame_per_block
    parse = PromptSchedule.single
    if cfg.method == "native":
        policy = partial(NativePolicy, window=window, sink_size=sink)
    elif cfg.method == "latentmem":
        policy = partial(
            LatentMemPolicy, window=window, sink_size=sink, memory_size=cfg.memory_size, recent_exclude=cfg.recent_exclude,
            retrieval=retrieval(), storage_device=None if cfg.memory_device == "auto" else torch.device(cfg.memory_device),
            storage_dtype=_storage_dtype(cfg.memory_dtype))
    elif cfg.method == "infrope":
        policy = partial(InfRopePolicy, window=window, sink_size=sink, cut_position=cfg.infrope_cut_position,
                         flush_newest=cfg.infrope_flush_newest, flush_after_sink=cfg.infrope_flush_after_sink)
        parse = partial(parse_infrope_prompt, frames_per_block=nf, cut_from_ending_scene=not cfg.infrope_cut_on_marked_scene)
    elif cfg.method == "deepforcing":
        policy = partial(DeepForcingPolicy, window=window, sink_size=sink, recent=cfg.df_recent,
                         scorer=AttentionScore(probabilities=cfg.df_score == "softmax"), score_queries=cfg.df_score_queries,
                         hysteresis=cfg.df_hysteresis)
    else:
        raise ValueError(f"unknown method '{cfg.method}'")
    return ContextMethod(cfg.method, policy, parse)


def build_components(cfg: InferenceConfig, device: torch.device, dtype: torch.dtype) -> InferenceComponents:
    """Everything a run needs. The context method is built first: its retrieval encoder is small and fails
    fast on a bad ae_ckpt."""
    require_assets(cfg)
    rcfg = cfg.rollout_config()
    method = build_context_method(rcfg, lambda: build_retrieval(rcfg.compression_method, lambda: build_autoencoder(cfg, device)))
    return InferenceComponents(
        generator=build_generator(cfg, device, dtype),
        text_encoder=build_text_encoder(cfg, device, dtype),
        vae=build_vae(cfg, device, dtype),
        method=method,
    )
