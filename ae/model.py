"""The retrieval autoencoder: a per-frame conv encoder whose L2-normalised output is the
retrieval descriptor, and a decoder that exists only to shape the embedding space in training.

Parameter names match the released trainer checkpoints (`{"model": state_dict, "config": dict}`),
so `checkpoints/ae_latent_mem.pt` loads strictly with no conversion.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from utils.assets import RAG_DOWNLOAD, require_path
from utils.config import ConfigError
from utils.checkpoint_io import load_checkpoint

GROUPNORM_EPS = 1e-5


@dataclass
class AEConfig:
    """The architecture; the field names are the training YAML keys and the checkpoint's config keys."""

    in_channels: int = 16
    spatial_h: int = 60
    spatial_w: int = 104
    latent_dim: int = 1024
    hidden_dims: tuple[int, ...] = (64, 128, 256)

    def __post_init__(self):
        self.hidden_dims = tuple(self.hidden_dims)

    def validate(self) -> None:
        for key in ("in_channels", "spatial_h", "spatial_w", "latent_dim"):
            if getattr(self, key) < 1:
                raise ConfigError(f"AE config key '{key}' must be >= 1, got {getattr(self, key)}")
        if not self.hidden_dims or min(self.hidden_dims) < 1:
            raise ConfigError(f"AE config key 'hidden_dims' must be a non-empty list of positive ints, got {list(self.hidden_dims)}")

    @classmethod
    def from_dict(cls, d: dict) -> "AEConfig":
        """Build from a dict of AE keys; missing keys take the defaults, an unknown key is an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown AE config keys {unknown}; expected a subset of {sorted(known)}")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    @classmethod
    def from_training_config(cls, d: dict) -> "AEConfig":
        """The architecture part of a trainer checkpoint's config (the whole flat training config)."""
        return cls.from_dict({f.name: d[f.name] for f in fields(cls) if f.name in d})

    @property
    def bottleneck_hw(self) -> tuple[int, int]:
        """Spatial size after the stride-2 stages (each maps n -> ceil(n / 2))."""
        h, w = self.spatial_h, self.spatial_w
        for _ in self.hidden_dims:
            h, w = (h + 1) // 2, (w + 1) // 2
        return h, w


class AEInputShapeError(ValueError):
    """A frame or embedding tensor does not have the shape the AE config expects."""


def group_norm(channels: int) -> nn.GroupNorm:
    groups = next(g for g in (32, 16, 8, 4, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels, eps=GROUPNORM_EPS)


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(
            group_norm(channels), nn.SiLU(), conv3x3(channels, channels),
            group_norm(channels), nn.SiLU(), conv3x3(channels, channels),
        )
        # Zero last conv: every block starts as the identity, so depth does not disturb early training.
        nn.init.zeros_(self.block[-1].weight)
        nn.init.zeros_(self.block[-1].bias)

    def forward(self, x):
        return x + self.block(x)


class Encoder(nn.Module):
    def __init__(self, cfg: AEConfig):
        super().__init__()
        layers, c_in = [], cfg.in_channels
        for c_out in cfg.hidden_dims:
            layers += [conv3x3(c_in, c_out, stride=2), group_norm(c_out), nn.SiLU(), ResidualBlock(c_out)]
            c_in = c_out
        self.conv_stack = nn.Sequential(*layers)
        self.final_norm = nn.Sequential(group_norm(c_in), nn.SiLU())
        self.fc = nn.Linear(c_in, cfg.latent_dim)

    def forward(self, x):
        # x: [N, C, H, W] -> [N, D]
        h = self.final_norm(self.conv_stack(x))
        return self.fc(h.mean(dim=(-2, -1)))


class Decoder(nn.Module):
    def __init__(self, cfg: AEConfig):
        super().__init__()
        dims = cfg.hidden_dims
        self.bottleneck = (dims[-1], *cfg.bottleneck_hw)
        self.out_hw = (cfg.spatial_h, cfg.spatial_w)
        self.fc = nn.Sequential(nn.Linear(cfg.latent_dim, dims[-1] * cfg.bottleneck_hw[0] * cfg.bottleneck_hw[1]), nn.SiLU())
        layers = []
        for c_in, c_out in zip(dims[::-1], dims[-2::-1]):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(c_in, c_out), group_norm(c_out), nn.SiLU(), ResidualBlock(c_out)]
        self.upsample_stack = nn.Sequential(*layers)
        self.final = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(dims[0], cfg.in_channels))

    def forward(self, z):
        # z: [N, D] -> [N, C, H, W]; the stride-2 stages rounded odd sizes up, so crop back.
        h = self.fc(z).unflatten(1, self.bottleneck)
        x = self.final(self.upsample_stack(h))
        return x[..., : self.out_hw[0], : self.out_hw[1]]


class RetrievalAutoencoder(nn.Module):
    def __init__(self, cfg: AEConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def _check_frames(self, x: torch.Tensor) -> None:
        expected = (self.cfg.in_channels, self.cfg.spatial_h, self.cfg.spatial_w)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise AEInputShapeError(
                f"retrieval AE expects frames [N, {expected[0]}, {expected[1]}, {expected[2]}] "
                f"(in_channels, spatial_h, spatial_w of its config), got {list(x.shape)}; "
                "use a checkpoint trained for this latent size"
            )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, C, H, W] -> z: [N, D], un-normalised (the space the training losses act on)."""
        self._check_frames(x)
        return self.encoder(x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, C, H, W] -> v: [N, D], L2-normalised retrieval descriptor."""
        return F.normalize(self.embed(x), dim=-1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z: [N, D] -> x_rec: [N, C, H, W]."""
        if z.ndim != 2 or z.shape[1] != self.cfg.latent_dim:
            raise AEInputShapeError(f"retrieval AE decoder expects embeddings [N, {self.cfg.latent_dim}], got {list(z.shape)}")
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [N, C, H, W] -> (x_rec: [N, C, H, W], z: [N, D] un-normalised)."""
        z = self.embed(x)
        return self.decoder(z), z


def reference_init_(model: RetrievalAutoencoder) -> RetrievalAutoencoder:
    """The reference trainer's initialisation, in place: Kaiming-normal convolutions (fan_out, ReLU
    gain), Xavier-uniform linear layers, zero biases. The zero last conv of every residual block is
    kept, so blocks still start as the identity (SPEC §2)."""
    identity_convs = {id(m.block[-1]) for m in model.modules() if isinstance(m, ResidualBlock)}
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and id(m) not in identity_convs:
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return model


class AECheckpointError(RuntimeError):
    """A retrieval-AE checkpoint does not match the model its config describes."""


def _state_dict_mismatches(model: nn.Module, state: dict) -> tuple[list[str], list[str], list[str]]:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {list(state[k].shape)} vs model {list(own[k].shape)}"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )
    return missing, unexpected, shapes


def load_retrieval_autoencoder(
    path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> RetrievalAutoencoder:
    """Build the AE from a trainer checkpoint `{"model": state_dict, "config": dict, ...}` and load it.

    The checkpoint's config is the whole training config; only the model keys are read. The load is
    strict: any missing, unexpected or mis-shaped key raises, naming them all.
    """
    path = require_path(path, "retrieval autoencoder checkpoint", RAG_DOWNLOAD)
    ckpt = load_checkpoint(path, "retrieval autoencoder checkpoint", f"train it again or download it:\n    {RAG_DOWNLOAD}")
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        found = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise AECheckpointError(f"{path}: expected a dict with 'model' (state dict) and 'config' (AE config), found {found}")
    cfg = AEConfig.from_training_config(ckpt["config"])
    model = RetrievalAutoencoder(cfg)
    missing, unexpected, shapes = _state_dict_mismatches(model, ckpt["model"])
    if shapes or missing or unexpected:
        raise AECheckpointError(
            f"{path} does not match RetrievalAutoencoder({cfg}):\n"
            f"  missing keys: {missing}\n  unexpected keys: {unexpected}\n  shape mismatches: {shapes}"
        )
    model.load_state_dict(ckpt["model"])
    return model.to(device=device, dtype=dtype)
