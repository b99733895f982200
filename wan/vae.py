"""Wan 2.1 VAE through diffusers' `AutoencoderKLWan`, with Wan's per-channel latent normalisation.

The original `Wan2.1_VAE.pth` is converted with diffusers' own single-file conversion
(`convert_wan_vae_to_diffusers`) into a model built from an explicit config, so nothing is read
from the hub at run time. Latents are normalised as Wan does: z = (mu - mean) / std on encode and
z * std + mean before decoding.

Layouts at this module's boundary (the project's [B, T, C, H, W] order, not diffusers' [B, C, T, H, W]):
    video   [B, T, 3, H, W] in [-1, 1], T = 1 + 4 (F - 1)
    latents [B, F, z_dim, H / 8, W / 8], normalised
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import torch
from diffusers import AutoencoderKLWan
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

from utils.assets import WAN_DOWNLOAD, require_path
from utils.seeding import DEMO_SEED, may_use_random_weights, seeded
from wan.checkpoint import load_state_dict_checked
from utils.checkpoint_io import load_checkpoint

# Wan 2.1's per-channel latent statistics (16 channels).
WAN21_LATENTS_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                      0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_LATENTS_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                     3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)


@dataclass(frozen=True)
class WanVAEConfig:
    base_dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    latents_mean: tuple[float, ...] = WAN21_LATENTS_MEAN
    latents_std: tuple[float, ...] = WAN21_LATENTS_STD

    def diffusers_kwargs(self) -> dict:
        return dict(base_dim=self.base_dim, z_dim=self.z_dim, dim_mult=list(self.dim_mult),
                    num_res_blocks=self.num_res_blocks, attn_scales=list(self.attn_scales),
                    temperal_downsample=list(self.temporal_downsample), dropout=0.0,
                    latents_mean=list(self.latents_mean), latents_std=list(self.latents_std))


VAE_PRESETS = {
    "wan2.1": WanVAEConfig(),
    "demo": WanVAEConfig(base_dim=8),  # random weights; same strides and latent channels as Wan 2.1
}


def vae_preset(name: str) -> WanVAEConfig:
    if name not in VAE_PRESETS:
        raise ValueError(f"unknown VAE preset '{name}'; expected one of {sorted(VAE_PRESETS)}")
    return VAE_PRESETS[name]


def read_vae_state_dict(path: str | os.PathLike, model: AutoencoderKLWan) -> dict[str, torch.Tensor]:
    """Weights of a Wan-original file (converted) or of a file already in diffusers' layout."""
    require_path(path, "VAE checkpoint", WAN_DOWNLOAD)
    state = load_checkpoint(path, "VAE checkpoint (vae.checkpoint)", f"download it again:\n    {WAN_DOWNLOAD}", mmap=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if set(state) <= set(model.state_dict()):
        return state
    return convert_wan_vae_to_diffusers(state)


def latent_statistic(values: tuple[float, ...], device: torch.device | str = "cpu") -> torch.Tensor:
    """Per-channel statistic -> [1, 1, z_dim, 1, 1] float32."""
    return torch.tensor(values, dtype=torch.float32, device=device).view(1, 1, -1, 1, 1)


class WanVAE(torch.nn.Module):
    def __init__(self, cfg: WanVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.model = AutoencoderKLWan(**cfg.diffusers_kwargs())
        self.register_buffer("latents_mean", latent_statistic(cfg.latents_mean), persistent=False)
        self.register_buffer("latents_std", latent_statistic(cfg.latents_std), persistent=False)

    @classmethod
    def from_preset(cls, preset: str, checkpoint: str | os.PathLike | None, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> "WanVAE":
        """The preset's VAE with weights from `checkpoint`; random weights only for `demo` without one."""
        cfg = vae_preset(preset)
        if checkpoint is None and not may_use_random_weights(preset):
            raise ValueError(f"VAE preset '{preset}' needs a checkpoint (vae.checkpoint); "
                             f"download it with:\n    {WAN_DOWNLOAD}")
        return cls.from_config(cfg, checkpoint, device, dtype)

    @classmethod
    def from_config(cls, cfg: WanVAEConfig, checkpoint: str | os.PathLike | None, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> "WanVAE":
        """A VAE of any size: weights from `checkpoint`, or random weights from DEMO_SEED without one."""
        with seeded(DEMO_SEED):
            vae = cls(cfg)
        if checkpoint is not None:
            state = read_vae_state_dict(checkpoint, vae.model)
            load_state_dict_checked(vae.model, state, checkpoint)
        return vae.to_inference_dtype(device, dtype).eval().requires_grad_(False)

    def to_inference_dtype(self, device: torch.device | str, dtype: torch.dtype) -> "WanVAE":
        """Network weights in `dtype`; the latent statistics stay float32 (bf16 rounds std 2.8184 to
        2.8125, a colour shift), so normalisation runs in float32 whatever the network dtype."""
        self.to(device=device, dtype=dtype)
        # rebuilt from the config: casting the bf16 copy back would keep its rounding
        self.latents_mean = latent_statistic(self.cfg.latents_mean, device)
        self.latents_std = latent_statistic(self.cfg.latents_std, device)
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def _normalize(self, mu: torch.Tensor) -> torch.Tensor:
        """float32 result whatever mu's dtype."""
        return (mu.float() - self.latents_mean) / self.latents_std

    def _denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """float32 z -> float32."""
        return z.float() * self.latents_std + self.latents_mean

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """video [B, T, 3, H, W] in [-1, 1] -> normalised latent means [B, 1 + (T - 1) // 4, z, H/8, W/8] float32."""
        x = video.to(self.dtype).permute(0, 2, 1, 3, 4)
        mu = self.model.encode(x).latent_dist.mode()  # [B, z, F, h, w]
        return self._normalize(mu.permute(0, 2, 1, 3, 4))

    def stream(self) -> "StreamingDecode":
        """A decode fed one chunk of latent frames at a time as they are generated (see StreamingDecode)."""
        return StreamingDecode(self)

    def decode_chunks(self, latents: torch.Tensor, chunk_frames: int) -> Iterator[torch.Tensor]:
        """Decode normalised latents [B, F, z, h, w] `chunk_frames` latent frames at a time, yielding
        consecutive video chunks [B, T_i, 3, H, W] in [-1, 1] (the first latent frame gives 1 video
        frame, every later one 4). The decoder's causal caches carry over between chunks, so the
        concatenated chunks equal a decode of the whole sequence; memory is bounded by the chunk."""
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        with self.stream() as stream:
            for start in range(0, latents.shape[1], chunk_frames):
                yield stream.decode(latents[:, start:start + chunk_frames])

    def decode(self, latents: torch.Tensor, chunk_frames: int = 4) -> torch.Tensor:
        """Normalised latents [B, F, z, h, w] -> video [B, 1 + 4 (F - 1), 3, H, W] in [-1, 1]."""
        return torch.cat(list(self.decode_chunks(latents, chunk_frames)), dim=1)


class StreamingDecode:
    """The causal decoder run over a video whose latent frames arrive in chunks (e.g. one generated block
    at a time). diffusers' AutoencoderKLWan decodes one latent frame per decoder call and keeps each causal
    convolution's last input frames in its feature cache (`_feat_map`); carrying that cache from chunk to
    chunk makes the concatenated chunks the decode of the whole video. The cache lives on the model, so one
    stream per VAE at a time, between start() and close() (or as a context manager)."""

    def __init__(self, vae: WanVAE):
        self.vae, self.model = vae, vae.model
        self.frames_decoded = 0  # latent frames so far

    def start(self) -> "StreamingDecode":
        """Begin a video: empty the causal cache."""
        self.model.clear_cache()
        self.frames_decoded = 0
        return self

    def close(self) -> None:
        """Free the causal cache (the VAE is ready for another stream)."""
        self.model.clear_cache()

    def __enter__(self) -> "StreamingDecode":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The next normalised latent frames [B, f, z, h, w] -> their video frames [B, T, 3, H, W] in [-1, 1]
        (T = 1 + 4 (f - 1) for the video's first chunk, 4 f after it)."""
        model = self.model
        z = self.vae._denormalize(latents).to(self.vae.dtype)
        x = model.post_quant_conv(z.permute(0, 2, 1, 3, 4))  # [B, z, f, h, w]; 1x1x1 conv
        outputs = []
        for i in range(x.shape[2]):
            model._conv_idx = [0]
            outputs.append(model.decoder(x[:, :, i:i + 1], feat_cache=model._feat_map, feat_idx=model._conv_idx,
                                         first_chunk=self.frames_decoded == 0))
            self.frames_decoded += 1
        return torch.cat(outputs, dim=2).clamp(-1.0, 1.0).permute(0, 2, 1, 3, 4)
