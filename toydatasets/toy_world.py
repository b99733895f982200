"""A procedural 2D world with ground truth, seen through a moving camera, in the latent layout.

The world is a torus of `height` x `width` cells with `channels` values per cell (the 16-channel
latent layout): Voronoi regions with their own mean vector, a smooth texture, and small
rectangular objects, normalised to zero mean and unit variance. A camera sees a `view` x `view`
window; its top-left corner moves by a constant velocity per frame, so the motion is inferable
from two recent frames and nothing else is needed to continue it (no action input).

Trajectory kinds (positions wrap around the torus):

- `loop`: horizontal pan at `speed` cells per frame; after width / speed frames the camera is back
  where it started and sees exactly the same views again (a revisit after more frames than an
  attention window holds, for the default sizes).
- `line`: vertical or diagonal pan; the vertical period height / speed is longer than any rollout
  of the experiment, so no place is seen twice.

Ground truth per frame: the camera position [y, x] and the true view [C, view, view]. Everything
depends only on the seeds and the config, so the same arguments give bit-identical tensors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

KINDS = ("loop", "line")
LOOP_DIRECTIONS = ((0, 1), (0, -1))
LINE_DIRECTIONS = ((1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1))
RGB_SEED = 1234  # fixed projection of the viewer; not part of any world


@dataclass
class WorldConfig:
    channels: int = 16
    height: int = 192  # cells along y; vertical period height / speed frames (no revisit in a rollout)
    width: int = 48  # cells along x; loop period width / speed frames
    view: int = 8  # camera window in cells (the latent frame is [channels, view, view])
    speed: int = 2  # cells per frame; 2 = one patch of the DiT per frame
    num_regions: int = 24
    num_objects: int = 48
    texture_blur: float = 1.5  # std in cells of the texture's Gaussian smoothing

    def validate(self) -> None:
        if min(self.channels, self.height, self.width, self.view, self.speed) < 1:
            raise ValueError(f"world sizes and speed must be >= 1, got {self}")
        if self.view > min(self.height, self.width):
            raise ValueError(f"view {self.view} is larger than the world {self.height} x {self.width}")
        if self.height % self.speed or self.width % self.speed:
            raise ValueError(f"height {self.height} and width {self.width} must be multiples of speed {self.speed}")

    @property
    def loop_period(self) -> int:
        """Frames until a `loop` trajectory is back at its start."""
        return self.width // self.speed


def torus_delta(a: torch.Tensor, b: torch.Tensor, size: int) -> torch.Tensor:
    """Shortest signed distance b - a on a circle of `size` cells (elementwise)."""
    return torch.remainder(b - a + size // 2, size) - size // 2


def _blur(field: torch.Tensor, std: float) -> torch.Tensor:
    """field: [C, H, W] -> Gaussian-smoothed with wrap-around (separable)."""
    radius = max(1, math.ceil(3 * std))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / std) ** 2)
    kernel = kernel / kernel.sum()
    c = field.shape[0]
    out = F.pad(field[None], (radius, radius, 0, 0), mode="circular")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="circular")
    out = F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return out[0]


def make_world(cfg: WorldConfig, seed: int) -> torch.Tensor:
    """The world of `seed`: [C, height, width] float32, zero mean and unit variance."""
    cfg.validate()
    g = torch.Generator().manual_seed(seed)
    c, h, w = cfg.channels, cfg.height, cfg.width
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    centres = torch.stack([torch.randint(0, h, (cfg.num_regions,), generator=g), torch.randint(0, w, (cfg.num_regions,), generator=g)], 1)
    dy = torus_delta(ys[None], centres[:, 0, None, None], h).float()
    dx = torus_delta(xs[None], centres[:, 1, None, None], w).float()
    region = (dy.pow(2) + dx.pow(2)).argmin(dim=0)  # [H, W] nearest centre on the torus
    means = torch.randn(cfg.num_regions, c, generator=g)
    world = means[region].permute(2, 0, 1)  # [C, H, W]
    world = world + 0.6 * _blur(torch.randn(c, h, w, generator=g), cfg.texture_blur) / 0.2
    for _ in range(cfg.num_objects):
        oy, ox = int(torch.randint(0, h, (1,), generator=g)), int(torch.randint(0, w, (1,), generator=g))
        sy, sx = (int(v) for v in torch.randint(2, 5, (2,), generator=g))
        colour = 2.0 * torch.randn(c, generator=g)
        rows, cols = (oy + torch.arange(sy)) % h, (ox + torch.arange(sx)) % w
        world[:, rows[:, None], cols[None, :]] = colour[:, None, None]
    return ((world - world.mean()) / world.std()).contiguous()


@dataclass(frozen=True)
class Trajectory:
    kind: str
    start: tuple[int, int]  # top-left corner [y, x] of the first view
    direction: tuple[int, int]  # unit steps per frame along [y, x]; velocity = direction * speed

    def positions(self, cfg: WorldConfig, num_frames: int) -> torch.Tensor:
        """-> [num_frames, 2] long, camera top-left [y, x] of every frame (wrapped into the world)."""
        t = torch.arange(num_frames)[:, None]
        step = torch.tensor(self.direction)[None] * cfg.speed
        pos = torch.tensor(self.start)[None] + t * step
        return torch.remainder(pos, torch.tensor([cfg.height, cfg.width]))


def sample_trajectory(cfg: WorldConfig, kind: str, generator: torch.Generator) -> Trajectory:
    """A random trajectory of `kind`; starts on multiples of `speed` so every view is patch-aligned."""
    if kind not in KINDS:
        raise ValueError(f"trajectory kind '{kind}' is not one of {list(KINDS)}")
    directions = LOOP_DIRECTIONS if kind == "loop" else LINE_DIRECTIONS
    d = directions[int(torch.randint(0, len(directions), (1,), generator=generator))]
    y = int(torch.randint(0, cfg.height // cfg.speed, (1,), generator=generator)) * cfg.speed
    x = int(torch.randint(0, cfg.width // cfg.speed, (1,), generator=generator)) * cfg.speed
    return Trajectory(kind, (y, x), d)


def views(world: torch.Tensor, positions: torch.Tensor, view: int) -> torch.Tensor:
    """world: [C, H, W]; positions: [..., 2] -> true views [..., C, view, view]."""
    _, h, w = world.shape
    offs = torch.arange(view)
    rows = torch.remainder(positions[..., 0, None] + offs, h)  # [..., view]
    cols = torch.remainder(positions[..., 1, None] + offs, w)
    picked = world[:, rows[..., :, None], cols[..., None, :]]  # [C, ..., view, view]
    return picked.movedim(0, -3)


def view_overlap(a: torch.Tensor, b: torch.Tensor, cfg: WorldConfig) -> torch.Tensor:
    """Fraction of a view's cells that two views share. a: [..., 2], b: [..., 2] positions (broadcast) -> [...]."""
    dy = torus_delta(a[..., 0], b[..., 0], cfg.height).abs()
    dx = torus_delta(a[..., 1], b[..., 1], cfg.width).abs()
    return ((cfg.view - dy).clamp(min=0) * (cfg.view - dx).clamp(min=0)).float() / cfg.view**2


def coverage(positions: torch.Tensor, cfg: WorldConfig) -> torch.Tensor:
    """positions: [..., 2] -> [..., height * width] indicator of the cells each view shows.

    The cosine similarity of two coverages is exactly their `view_overlap`: the oracle retrieval
    descriptor (the true camera position, in a form where nearest means most overlap).
    """
    offs = torch.arange(cfg.view)
    rows = torch.remainder(positions[..., 0, None] + offs, cfg.height)
    cols = torch.remainder(positions[..., 1, None] + offs, cfg.width)
    cells = (rows[..., :, None] * cfg.width + cols[..., None, :]).flatten(-2)  # [..., view * view]
    out = torch.zeros(*positions.shape[:-1], cfg.height * cfg.width)
    return out.scatter_(-1, cells, 1.0)


def to_rgb(latents: torch.Tensor, scale: int = 8) -> torch.Tensor:
    """The viewer's decoder: latents [..., C, H, W] -> uint8 RGB [..., H * scale, W * scale, 3].

    A fixed linear map of the channels to 3 colours (the same for every world), squashed to [0, 255].
    """
    g = torch.Generator().manual_seed(RGB_SEED)
    proj = torch.linalg.qr(torch.randn(latents.shape[-3], 3, generator=g))[0]  # [C, 3] orthonormal columns
    rgb = torch.einsum("...chw,cd->...hwd", latents.float(), proj)
    rgb = torch.sigmoid(rgb) * 255
    rgb = rgb.repeat_interleave(scale, dim=-3).repeat_interleave(scale, dim=-2)
    return rgb.round().to(torch.uint8)
