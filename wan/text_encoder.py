"""UMT5 text encoder of the Wan backbone: prompts -> zero-padded embeddings [B, text_len, d_model].

Built on transformers' `UMT5EncoderModel` from an explicit config preset (never from the hub).
Weights come from Wan's original file `models_t5_umt5-xxl-enc-bf16.pth` (keys converted by
`wan.t5_conversion`) or from a Diffusers-layout `text_encoder/` folder; the tokenizer from a local
folder (`google/umt5-xxl/` inside the Wan download). The `demo` preset is a tiny encoder with
RANDOM weights and a built-in byte tokenizer, for CPU demos and tests only: its embeddings carry
no meaning.
"""
from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Callable

import torch
from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

from utils.assets import WAN_DOWNLOAD, MissingAssetError, require_path
from utils.seeding import DEMO_SEED, may_use_random_weights, seeded
from wan.t5_conversion import TIED_ALIASES, convert_wan_t5_state_dict
from wan.text_encoder_config import BYTE_TOKENIZER_VOCAB, TextEncoderPreset, default_tokenizer_dir, text_encoder_preset
from utils.checkpoint_io import load_checkpoint

# Fields that must agree between a preset and a Diffusers folder's config.json.
_ARCH_FIELDS = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads",
                "relative_attention_num_buckets", "relative_attention_max_distance", "feed_forward_proj")
_SHOWN_KEYS = 5


class TextEncoderLoadError(ValueError):
    """Text encoder weights or config do not match the requested preset."""


class ByteTokenizer:
    """Download-free tokenizer: UTF-8 bytes -> ids, 0 = padding, 1 = end of sequence (as in T5)."""

    pad_id = 0
    eos_id = 1
    vocab_size = BYTE_TOKENIZER_VOCAB

    def __call__(self, prompts: list[str], text_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """ids, mask: [B, text_len] int64; truncation keeps the end-of-sequence token."""
        ids = torch.full((len(prompts), text_len), self.pad_id, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            tokens = [b + 2 for b in prompt.encode("utf-8")][: text_len - 1] + [self.eos_id]
            ids[row, : len(tokens)] = torch.tensor(tokens)
        return ids, (ids != self.pad_id).long()


class PretrainedTokenizer:
    """A tokenizer saved in a local folder (Wan's `google/umt5-xxl/`), padded to a fixed length."""

    def __init__(self, folder: str | Path):
        folder = require_path(folder, "UMT5 tokenizer folder", WAN_DOWNLOAD)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)

    def __call__(self, prompts: list[str], text_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """ids, mask: [B, text_len] int64, right-padded, end-of-sequence token appended."""
        out = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=text_len,
                             add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        return out.input_ids, out.attention_mask


def clean_prompt(prompt: str) -> str:
    """The reference's 'whitespace' cleaning: unescape HTML entities, collapse whitespace."""
    text = html.unescape(html.unescape(prompt)).strip()
    return re.sub(r"\s+", " ", text).strip()


def umt5_config(preset: TextEncoderPreset) -> UMT5Config:
    return UMT5Config(
        vocab_size=preset.vocab_size, d_model=preset.d_model, d_kv=preset.d_kv, d_ff=preset.d_ff,
        num_layers=preset.num_layers, num_heads=preset.num_heads,
        relative_attention_num_buckets=preset.num_buckets,
        relative_attention_max_distance=preset.max_distance,
        feed_forward_proj="gated-gelu", dropout_rate=0.0, layer_norm_epsilon=preset.eps,
    )


def _first(keys, n: int = _SHOWN_KEYS) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def check_state_dict(model: UMT5EncoderModel, state_dict: dict, source: str | Path) -> None:
    """Raise TextEncoderLoadError naming `source` unless `state_dict` fits `model` key for key."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in TIED_ALIASES}
    missing = expected.keys() - state_dict.keys()
    unexpected = state_dict.keys() - expected.keys()
    wrong_shape = [f"{k} {tuple(state_dict[k].shape)} != {expected[k]}"
                   for k in sorted(expected.keys() & state_dict.keys()) if tuple(state_dict[k].shape) != expected[k]]
    if not (missing or unexpected or wrong_shape):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_first(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_first(unexpected)})")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} shape mismatches ({'; '.join(wrong_shape[:_SHOWN_KEYS])})")
    raise TextEncoderLoadError(
        f"text encoder weights '{source}' do not fit the UMT5 config (d_model {model.config.d_model}, "
        f"{model.config.num_layers} layers): {'; '.join(problems)}. Names are transformers names after "
        f"conversion; check that the file is Wan's models_t5_umt5-xxl-enc-bf16.pth and the preset is right.")


def _load_original(path: Path, config: UMT5Config) -> UMT5EncoderModel:
    """Wan's .pth state dict -> UMT5EncoderModel; tensors are memory-mapped, not copied."""
    state_dict = load_checkpoint(path, "text encoder weights (text_encoder.weights)", f"download it again:\n    {WAN_DOWNLOAD}",
                                 mmap=True)
    if not isinstance(state_dict, dict):
        raise TextEncoderLoadError(f"'{path}' holds a {type(state_dict).__name__}, expected the state dict "
                                   "of Wan's T5 encoder (models_t5_umt5-xxl-enc-bf16.pth)")
    state_dict = convert_wan_t5_state_dict(state_dict)
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    check_state_dict(model, state_dict, path)
    aliases = {alias: state_dict["shared.weight"] for alias in TIED_ALIASES}
    model.load_state_dict({**state_dict, **aliases}, strict=True, assign=True)
    # assign=True gave the alias its own Parameter object; re-tie so casting keeps a single copy.
    model.set_input_embeddings(model.shared)
    return model


def _load_diffusers(folder: Path, config: UMT5Config, dtype: torch.dtype) -> UMT5EncoderModel:
    """A `save_pretrained` folder (Diffusers' `text_encoder/`), checked against the preset config."""
    saved = UMT5Config.from_pretrained(folder, local_files_only=True)
    differ = [f"{f}={getattr(saved, f)!r} (preset {getattr(config, f)!r})"
              for f in _ARCH_FIELDS if getattr(saved, f) != getattr(config, f)]
    if differ:
        raise TextEncoderLoadError(f"'{folder / 'config.json'}' does not match the text encoder preset: "
                                   f"{', '.join(differ)}; pick the preset that fits this folder")
    model, info = UMT5EncoderModel.from_pretrained(folder, dtype=dtype, local_files_only=True,
                                                   output_loading_info=True)
    problems = {k: info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if info[k]}
    if problems:
        detail = "; ".join(f"{len(v)} {k.replace('_', ' ')} ({_first(str(x) for x in v)})" for k, v in problems.items())
        raise TextEncoderLoadError(f"text encoder weights in '{folder}' do not fit its config.json: {detail}")
    return model


def load_umt5_encoder(weights: str | Path, config: UMT5Config, device: torch.device | str,
                      dtype: torch.dtype) -> UMT5EncoderModel:
    """Load either format: a file is Wan's original .pth, a folder with config.json is Diffusers layout."""
    path = require_path(weights, "UMT5 text encoder weights", WAN_DOWNLOAD)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TextEncoderLoadError(
                f"'{path}' is a folder without config.json; pass Wan's models_t5_umt5-xxl-enc-bf16.pth "
                "file or a Diffusers-layout text_encoder/ folder")
        model = _load_diffusers(path, config, dtype)
    else:
        model = _load_original(path, config)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def random_umt5_encoder(config: UMT5Config, seed: int, device: torch.device | str,
                        dtype: torch.dtype) -> UMT5EncoderModel:
    """transformers' default initialisation under a fixed seed; the global RNG is left untouched."""
    with seeded(seed):
        model = UMT5EncoderModel(config)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


Tokenizer = Callable[[list[str], int], tuple[torch.Tensor, torch.Tensor]]


class EncodedPrompts:
    """Embeddings of a fixed set of prompts, kept after their encoder is released.

    Stored trimmed to each prompt's tokens on the CPU; `encode` pads them like WanTextEncoder.encode.
    """

    def __init__(self, embeddings: dict[str, torch.Tensor], text_len: int, device: torch.device, dtype: torch.dtype):
        self._embeddings, self.text_len, self.device, self.dtype = embeddings, text_len, device, dtype

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """prompts: B strings of the encoded set -> [B, text_len, d_model] on `device` in `dtype`."""
        unknown = [p for p in prompts if p not in self._embeddings]
        if unknown:
            raise KeyError(f"prompts {unknown[:3]} were not encoded before the text encoder was released")
        d_model = next(iter(self._embeddings.values())).shape[-1]
        out = torch.zeros(len(prompts), self.text_len, d_model, device=self.device, dtype=self.dtype)
        for row, prompt in enumerate(prompts):
            emb = self._embeddings[prompt]
            out[row, : emb.shape[0]] = emb
        return out


class WanTextEncoder:
    """Prompts -> embeddings [B, text_len, d_model] with positions past each prompt's length zeroed.

    Embeddings are cached per prompt string (trimmed to the prompt's tokens), so a prompt is
    encoded once per run however many videos use it; `clear_cache()` frees them.
    """

    def __init__(self, model: UMT5EncoderModel, tokenizer: Tokenizer, text_len: int):
        self.model = model
        self.tokenizer = tokenizer
        self.text_len = text_len
        self._cache: dict[str, torch.Tensor] = {}

    @classmethod
    def from_preset(cls, preset: str, weights: str | None, tokenizer: str | None,
                    device: torch.device | str, dtype: torch.dtype, text_len: int) -> "WanTextEncoder":
        """Build a preset's encoder.

        weights: Wan's .pth file or a Diffusers `text_encoder/` folder; None only for presets with a
            demo seed (random weights).
        tokenizer: tokenizer folder; None means the byte tokenizer for demo presets without weights,
            else the Wan layout beside the weights (`google/umt5-xxl/`, or `../tokenizer/` for a folder).
        """
        spec = text_encoder_preset(preset)
        config = umt5_config(spec)
        if weights is None:
            if not may_use_random_weights(preset):
                raise MissingAssetError(
                    f"text encoder preset '{preset}' needs a weights path (Wan's "
                    f"models_t5_umt5-xxl-enc-bf16.pth); none was given. Download it with:\n    {WAN_DOWNLOAD}")
            model = random_umt5_encoder(config, DEMO_SEED, device, dtype)
        else:
            model = load_umt5_encoder(weights, config, device, dtype)
        if tokenizer is None and weights is None:
            tok: Tokenizer = ByteTokenizer()
        else:
            tok = PretrainedTokenizer(tokenizer if tokenizer is not None else default_tokenizer_dir(weights))
        return cls(model, tok, text_len)

    @property
    def d_model(self) -> int:
        return self.model.config.d_model

    def clear_cache(self) -> None:
        self._cache.clear()

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """prompts: B strings -> [B, text_len, d_model] in the model's device and dtype."""
        new = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if new:
            self._encode_into_cache(new)
        param = self.model.shared.weight
        out = torch.zeros(len(prompts), self.text_len, self.d_model, device=param.device, dtype=param.dtype)
        for row, prompt in enumerate(prompts):
            emb = self._cache[prompt]
            out[row, : emb.shape[0]] = emb
        return out

    def encode_all(self, prompts: list[str]) -> EncodedPrompts:
        """Every distinct prompt, one at a time (activations of one prompt), kept on the CPU so the encoder
        can be released before the rollout."""
        param = self.model.shared.weight
        embeddings = {}
        for prompt in dict.fromkeys(prompts):
            self._encode_into_cache([prompt])
            embeddings[prompt] = self._cache.pop(prompt).cpu()
        return EncodedPrompts(embeddings, self.text_len, param.device, param.dtype)

    @torch.no_grad()
    def _encode_into_cache(self, prompts: list[str]) -> None:
        ids, mask = self.tokenizer([clean_prompt(p) for p in prompts], self.text_len)  # [B, L]
        device = self.model.shared.weight.device
        hidden = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state  # [B, L, D]
        lengths = mask.gt(0).sum(dim=1).tolist()
        for prompt, h, n in zip(prompts, hidden, lengths):
            self._cache[prompt] = h[:n].clone()
