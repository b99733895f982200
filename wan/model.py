"""Causal Wan2.1 text-to-video DiT, run one block of latent frames at a time.

Parameter names and shapes equal the released Wan2.1 checkpoints. Self-attention does not own a
cache: each call receives a `BlockAttention` (wan/block_attention.py) that supplies the keys and
values of earlier frames and optionally stores the current block's keys and values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wan.block_attention import BlockAttention
from wan.model_config import WanModelConfig


class Linear(nn.Linear):
    """A Linear whose matmul runs in its weight's dtype: the input is cast to it, so bf16 weights fed
    float32 activations (modulated norms, the float32 residual stream) work without autocast."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(self.weight.dtype), self.weight, self.bias)


def sinusoidal_embedding(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """[N] -> [N, dim] float64, cosine half first (Wan convention)."""
    half = dim // 2
    positions = positions.to(torch.float64)
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=positions.device) / half)
    angles = torch.outer(positions, freqs)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        # The float32 weight scales before rounding, so the output keeps x's dtype.
        return ((xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)) * self.weight.float()).type_as(x)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the activation and parameter dtypes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).type_as(x)


class SelfAttention(nn.Module):
    def __init__(self, cfg: WanModelConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.q = Linear(cfg.dim, cfg.dim)
        self.k = Linear(cfg.dim, cfg.dim)
        self.v = Linear(cfg.dim, cfg.dim)
        self.o = Linear(cfg.dim, cfg.dim)
        self.norm_q = RMSNorm(cfg.dim, cfg.eps) if cfg.qk_norm else nn.Identity()
        self.norm_k = RMSNorm(cfg.dim, cfg.eps) if cfg.qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, attn: BlockAttention, layer: int) -> torch.Tensor:
        """x: [B, S, dim] tokens of the current block -> [B, S, dim]."""
        b, s, _ = x.shape
        q = self.norm_q(self.q(x)).view(b, s, self.num_heads, -1)
        k = self.norm_k(self.k(x)).view(b, s, self.num_heads, -1)
        v = self.v(x).view(b, s, self.num_heads, -1)
        return self.o(attn.attend(layer, q, k, v).flatten(2))


class CrossAttention(nn.Module):
    """Text cross-attention; its keys/values depend only on the prompt and are computed once."""

    def __init__(self, cfg: WanModelConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.q = Linear(cfg.dim, cfg.dim)
        self.k = Linear(cfg.dim, cfg.dim)
        self.v = Linear(cfg.dim, cfg.dim)
        self.o = Linear(cfg.dim, cfg.dim)
        self.norm_q = RMSNorm(cfg.dim, cfg.eps) if cfg.qk_norm else nn.Identity()
        self.norm_k = RMSNorm(cfg.dim, cfg.eps) if cfg.qk_norm else nn.Identity()

    def text_kv(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """text: [B, L, dim] -> k, v: [B, heads, L, head_dim]."""
        b, l, _ = text.shape
        k = self.norm_k(self.k(text)).view(b, l, self.num_heads, -1).transpose(1, 2)
        v = self.v(text).view(b, l, self.num_heads, -1).transpose(1, 2)
        return k, v

    def forward(self, x: torch.Tensor, text_kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.norm_q(self.q(x)).view(b, s, self.num_heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, *text_kv)
        return self.o(out.transpose(1, 2).flatten(2))


class DiTBlock(nn.Module):
    def __init__(self, cfg: WanModelConfig):
        super().__init__()
        self.norm1 = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(cfg)
        self.norm3 = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=True) if cfg.cross_attn_norm else nn.Identity()
        self.cross_attn = CrossAttention(cfg)
        self.norm2 = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(Linear(cfg.dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), Linear(cfg.ffn_dim, cfg.dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, cfg.dim) / cfg.dim**0.5)

    def forward(self, x, e, text_kv, attn: BlockAttention, layer: int):
        """x: [B, F*T, dim]; e: [B, F, 6, dim] per-frame modulation (float32)."""
        frames = e.shape[1]
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation.unsqueeze(1) + e).chunk(6, dim=2)

        def modulate(h, shift, scale):  # h: [B, F*T, dim]; shift/scale: [B, F, 1, dim]
            return (h.unflatten(1, (frames, -1)).float() * (1 + scale) + shift).flatten(1, 2)

        def gated(h, gate):
            return (h.unflatten(1, (frames, -1)) * gate).flatten(1, 2)

        x = x + gated(self.self_attn(modulate(self.norm1(x), shift1, scale1), attn, layer), gate1)
        x = x + self.cross_attn(self.norm3(x), text_kv)
        x = x + gated(self.ffn(modulate(self.norm2(x), shift2, scale2)), gate2)
        return x


class Head(nn.Module):
    def __init__(self, cfg: WanModelConfig):
        super().__init__()
        self.norm = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.head = Linear(cfg.dim, cfg.out_dim * math.prod(cfg.patch_size))
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """x: [B, F*T, dim]; e: [B, F, 1, dim] -> [B, F*T, out_dim * prod(patch)]."""
        frames = e.shape[1]
        shift, scale = (self.modulation.unsqueeze(1) + e).chunk(2, dim=2)
        h = self.norm(x).unflatten(1, (frames, -1)).float() * (1 + scale) + shift
        return self.head(h.flatten(1, 2))


@dataclass
class TextContext:
    """Per-layer cross-attention keys/values of one batch of prompts."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]


class CausalWanModel(nn.Module):
    def __init__(self, cfg: WanModelConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embedding = nn.Conv3d(cfg.in_dim, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(Linear(cfg.text_dim, cfg.dim), nn.GELU(approximate="tanh"), Linear(cfg.dim, cfg.dim))
        self.time_embedding = nn.Sequential(Linear(cfg.freq_dim, cfg.dim), nn.SiLU(), Linear(cfg.dim, cfg.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), Linear(cfg.dim, cfg.dim * 6))
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.num_layers))
        self.head = Head(cfg)

    @property
    def compute_dtype(self) -> torch.dtype:
        """dtype of the matmuls and of the attention K/V (the patch embedding's)."""
        return self.patch_embedding.weight.dtype

    def to_inference_dtype(self, dtype: torch.dtype) -> "CausalWanModel":
        """Cast in place for inference in `dtype`, keeping Wan's float32 parts: the modulation tables,
        the norm weights, the time-embedding MLP and the head stay float32 (their bf16 rounding would
        shift every token's scale and shift); the other Linears and the patch embedding run in `dtype`."""
        self.to(dtype)
        for module in self.modules():
            if isinstance(module, (RMSNorm, LayerNorm)):
                module.float()
        self.time_embedding.float()
        self.time_projection.float()
        self.head.float()
        for block in self.blocks:
            block.modulation.data = block.modulation.data.float()
        return self

    def encode_text(self, prompt_embeds: torch.Tensor) -> TextContext:
        """prompt_embeds: [B, L <= text_len, text_dim] -> cross-attention K/V of every layer."""
        b, length, _ = prompt_embeds.shape
        if length > self.cfg.text_len:
            raise ValueError(f"prompt embedding has {length} tokens, more than text_len {self.cfg.text_len}")
        padded = F.pad(prompt_embeds, (0, 0, 0, self.cfg.text_len - length))
        text = self.text_embedding(padded)
        return TextContext([blk.cross_attn.text_kv(text) for blk in self.blocks])

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, text: TextContext, attn: BlockAttention) -> torch.Tensor:
        """x: [B, F, C, H, W] latents of one block; timestep: [B, F] -> flow prediction [B, F, C, H, W]."""
        b, frames, _, height, width = x.shape
        pt, ph, pw = self.cfg.patch_size
        tokens = self.patch_embedding(x.transpose(1, 2).to(self.patch_embedding.weight.dtype))
        gf, gh, gw = tokens.shape[2:]
        tokens = tokens.flatten(2).transpose(1, 2)  # [B, F*h*w, dim]

        t_freq = sinusoidal_embedding(self.cfg.freq_dim, timestep.flatten()).to(torch.float32)
        e = self.time_embedding(t_freq).float()  # [B*F, dim]
        e_blocks = self.time_projection(e).float().unflatten(1, (6, self.cfg.dim)).unflatten(0, (b, frames))
        for layer, block in enumerate(self.blocks):
            tokens = block(tokens, e_blocks, text.kv[layer], attn, layer)
        out = self.head(tokens, e.unflatten(0, (b, frames)).unsqueeze(2))
        # tokens -> patches: each token holds (dt, dy, dx, channel) with channel fastest
        out = out.view(b, gf, gh, gw, pt, ph, pw, self.cfg.out_dim)
        out = torch.einsum("bfhwpqrc->bfpchqwr", out).reshape(b, gf * pt, self.cfg.out_dim, gh * ph, gw * pw)
        return out.float()
