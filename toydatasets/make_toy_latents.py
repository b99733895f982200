"""Deterministic synthetic latent videos whose scenes change and later come back.

Each scene is a smooth random field per channel (a sum of a few low-frequency plane waves plus a
per-channel offset, roughly unit variance). A video is a sequence of segments; each segment shows
one scene, translating slowly (a phase shift of the waves), with per-frame Gaussian noise. After
the first segment, a segment revisits a scene already shown in the same video with probability
`--revisit-prob`, else it shows a scene the video has not shown yet. A revisit starts from a new
random offset, so it resembles the earlier visit without repeating it.

Output, in the layout of the released toy latents::

    <out>/latent_000000.pt   float32 tensor [T, C, H, W]
    <out>/latent_000001.pt   ...
    <out>/scenes.json        {"config": {...}, "videos": {"latent_000000.pt": [scene id of every frame], ...}}

The scene bank depends only on (seed, num_scenes, channels, height, width) and video i only on
(seed, i) and the shape arguments, so the same arguments give byte-identical files and a larger
--num-videos only appends videos.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from utils.atomic import atomic_torch_save, atomic_write_text

SCENES_FILE = "scenes.json"
WAVES_PER_CHANNEL = 4
MAX_CYCLES_PER_FRAME = 1.5  # low spatial frequencies keep the fields smooth at any frame size


@dataclass
class ToyConfig:
    num_videos: int = 8
    frames: int = 96
    channels: int = 16
    height: int = 8
    width: int = 8
    num_scenes: int = 6
    min_segment: int = 6
    max_segment: int = 16
    revisit_prob: float = 0.5
    motion: float = 0.1  # translation speed in pixels per frame
    noise: float = 0.1  # std of the per-frame Gaussian noise
    seed: int = 0

    def validate(self) -> None:
        if min(self.num_videos, self.frames, self.channels, self.height, self.width, self.num_scenes) < 1:
            raise ValueError(f"toy config sizes must be >= 1, got {self}")
        if not 1 <= self.min_segment <= self.max_segment:
            raise ValueError(f"need 1 <= min_segment <= max_segment, got {self.min_segment}, {self.max_segment}")
        if not 0.0 <= self.revisit_prob <= 1.0:
            raise ValueError(f"revisit_prob must be in [0, 1], got {self.revisit_prob}")


@dataclass
class SceneBank:
    """Plane-wave parameters of every scene (float64 for reproducible rendering)."""

    freqs: torch.Tensor  # [S, C, M, 2] cycles per pixel along (y, x)
    phases: torch.Tensor  # [S, C, M]
    amps: torch.Tensor  # [S, C, M]
    offsets: torch.Tensor  # [S, C]


def make_scene_bank(cfg: ToyConfig) -> SceneBank:
    gen = torch.Generator().manual_seed(cfg.seed)
    shape = (cfg.num_scenes, cfg.channels, WAVES_PER_CHANNEL)
    span = torch.tensor([cfg.height, cfg.width], dtype=torch.float64)
    freqs = (torch.rand(*shape, 2, generator=gen, dtype=torch.float64) * 2 - 1) * MAX_CYCLES_PER_FRAME / span
    phases = torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 * math.pi
    amps = torch.randn(*shape, generator=gen, dtype=torch.float64)
    # a sum of M cosines with amplitudes a has variance sum(a^2) / 2; scale it to about 1
    amps = amps * math.sqrt(2) / amps.norm(dim=-1, keepdim=True)
    offsets = 0.5 * torch.randn(cfg.num_scenes, cfg.channels, generator=gen, dtype=torch.float64)
    return SceneBank(freqs, phases, amps, offsets)


def render_scene(bank: SceneBank, scene: int, shift: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Scene `scene` translated by `shift` ([2] pixels along y, x) -> [C, H, W] float64."""
    y, x = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij")
    coords = torch.stack([y, x], dim=-1) - shift  # [H, W, 2]
    freqs = bank.freqs[scene]  # [C, M, 2]
    angle = 2 * math.pi * torch.einsum("hwk,cmk->cmhw", coords, freqs) + bank.phases[scene][..., None, None]
    field = (bank.amps[scene][..., None, None] * torch.cos(angle)).sum(dim=1)
    return field + bank.offsets[scene][:, None, None]


def video_generator(cfg: ToyConfig, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(cfg.seed * 1_000_003 + 1 + index)


def scene_schedule(cfg: ToyConfig, gen: torch.Generator) -> list[int]:
    """Scene id of every frame: segments of random length; later segments may revisit earlier scenes."""
    ids: list[int] = []
    shown: list[int] = []
    unseen = torch.randperm(cfg.num_scenes, generator=gen).tolist()
    while len(ids) < cfg.frames:
        length = int(torch.randint(cfg.min_segment, cfg.max_segment + 1, (1,), generator=gen))
        revisitable = [s for s in shown if s != shown[-1]]
        revisit = bool(torch.rand(1, generator=gen) < cfg.revisit_prob)
        if unseen and not (revisit and revisitable):
            scene = unseen.pop()
        elif revisitable:
            scene = revisitable[int(torch.randint(len(revisitable), (1,), generator=gen))]
        else:  # a single-scene bank: keep showing it
            scene = shown[-1]
        shown.append(scene)
        ids += [scene] * length
    return ids[: cfg.frames]


def make_video(cfg: ToyConfig, bank: SceneBank, index: int) -> tuple[torch.Tensor, list[int]]:
    """Video `index`: (latents [T, C, H, W] float32, scene id of every frame)."""
    gen = video_generator(cfg, index)
    ids = scene_schedule(cfg, gen)
    frames = []
    for t, scene in enumerate(ids):
        if t == 0 or scene != ids[t - 1]:  # a new segment starts at a random offset and heading
            shift = torch.rand(2, generator=gen, dtype=torch.float64) * torch.tensor([cfg.height, cfg.width])
            heading = torch.rand(1, generator=gen, dtype=torch.float64) * 2 * math.pi
            velocity = cfg.motion * torch.cat([heading.sin(), heading.cos()])
        else:
            shift = shift + velocity
        noise = cfg.noise * torch.randn(cfg.channels, cfg.height, cfg.width, generator=gen, dtype=torch.float64)
        frames.append(render_scene(bank, scene, shift, cfg.height, cfg.width) + noise)
    return torch.stack(frames).float(), ids


def video_name(index: int) -> str:
    return f"latent_{index:06d}.pt"


def write_toy_dataset(cfg: ToyConfig, out: str | Path, progress: bool = True) -> Path:
    cfg.validate()
    out = Path(out)
    bank = make_scene_bank(cfg)
    scenes = {}
    for i in tqdm(range(cfg.num_videos), desc="toy videos", disable=not progress):
        latents, ids = make_video(cfg, bank, i)
        atomic_torch_save(latents, out / video_name(i))
        scenes[video_name(i)] = ids
    # written last: a folder with scenes.json is complete
    atomic_write_text(json.dumps({"config": asdict(cfg), "videos": scenes}) + "\n", out / SCENES_FILE)
    return out


def parse_args(argv=None) -> tuple[ToyConfig, Path]:
    defaults = ToyConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("toydatasets/toy"), help="output folder")
    for name, value in asdict(defaults).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = vars(p.parse_args(argv))
    out = args.pop("out")
    try:
        return ToyConfig(**args), out
    except ValueError as err:
        p.error(str(err))  # one usage line and exit 2 instead of a traceback


def main(argv=None) -> None:
    cfg, out = parse_args(argv)
    write_toy_dataset(cfg, out)
    print(f"wrote {cfg.num_videos} videos [T={cfg.frames}, C={cfg.channels}, H={cfg.height}, W={cfg.width}] to {out}")


if __name__ == "__main__":
    main()
