"""Token geometry of one run, derived at run time from the model config and the latent frame size.

latent frame [C, H, W] -> patch grid (H / ph, W / pw) -> tokens per frame -> window and bank sizes in
tokens; F latent frames decode to 1 + 4 (F - 1) video frames (Wan2.1's VAE halves time twice).
"""
from __future__ import annotations

from dataclasses import dataclass

from wan.model_config import WanModelConfig

VAE_TEMPORAL_STRIDE = 4  # Wan2.1 VAE: two temporal downsamplings, the first frame kept alone


@dataclass(frozen=True)
class LatentGeometry:
    channels: int
    height: int  # latent frame height (pixels / VAE stride 8)
    width: int
    patch_size: tuple[int, int, int]  # (t, h, w) of the DiT's patch embedding

    @classmethod
    def of(cls, mcfg: WanModelConfig, height: int, width: int) -> "LatentGeometry":
        _, ph, pw = mcfg.patch_size
        if height % ph or width % pw:
            raise ValueError(f"latent frame {height} x {width} is not a multiple of the patch size {ph} x {pw}")
        return cls(mcfg.in_dim, height, width, tuple(mcfg.patch_size))

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one latent frame."""
        return self.channels, self.height, self.width

    @property
    def grid_hw(self) -> tuple[int, int]:
        """Patch grid of one frame."""
        return self.height // self.patch_size[1], self.width // self.patch_size[2]

    @property
    def tokens_per_frame(self) -> int:
        h, w = self.grid_hw
        return h * w

    def tokens(self, num_frames: int) -> int:
        """Tokens of `num_frames` latent frames (a window, a block, the bank)."""
        return num_frames * self.tokens_per_frame

    @staticmethod
    def video_frames(num_latent_frames: int) -> int:
        """Video frames the VAE decodes from `num_latent_frames` latent frames: 1 + 4 (F - 1)."""
        return 1 + VAE_TEMPORAL_STRIDE * (num_latent_frames - 1)
