"""Deterministic synthetic latent videos whose scenes change and later come back.

Each scene is a texture: per channel, a sum of a few plane waves with the scene's own frequencies,
orientations and amplitudes (roughly unit variance). Its identity is in that spatial structure,
not in the channel means: a per-channel offset is optional (`--offset-std`, 0 by default), and
without it the spatial mean of a frame is small and changes as the camera moves. A video is a
sequence of segments; each segment shows one scene under a drifting camera (a translation whose
heading turns slowly), with per-frame Gaussian noise. A later segment revisits a scene shown
earlier in the same video with probability `--revisit-prob`, but only one that has been off screen
for at least `--min-revisit-gap` frames (longer than the attention window, so only retrieval can
bring it back); a revisit starts from a new random offset and heading.

Two regimes (`--regime`; any flag overrides the regime's value):
    cuts    short segments (4-10 frames), noise 0.3: most training chunks contain a cut
    smooth  long segments (24-48 frames), noise 0.03, faster drift, 192 frames: few chunks contain a cut

Output, in the layout of the released toy latents::

    <out>/latent_000000.pt   float32 tensor [T, C, H, W]
    <out>/latent_000001.pt   ...
    <out>/scenes.json        {"config": {...}, "videos": {"latent_000000.pt": [scene id of every frame], ...},
                              "segments": {"latent_000000.pt": [segment index of every frame], ...}}

The scene bank depends only on (scene_seed, num_scenes, channels, height, width) and video i only
on (seed, i) and the other arguments, so the same arguments give byte-identical files and a larger
--num-videos only appends videos. Use other seeds (both) for evaluation videos than for training.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from utils.atomic import atomic_torch_save, atomic_write_text

SCENES_FILE = "scenes.json"
WAVES_PER_CHANNEL = 4
MIN_CYCLES_PER_FRAME = 0.5  # no near-constant waves: they would act as a channel offset
MAX_CYCLES_PER_FRAME = 2.0  # low spatial frequencies keep the fields smooth at any frame size


@dataclass
class ToyConfig:
    num_videos: int = 8
    frames: int = 128
    channels: int = 16
    height: int = 8
    width: int = 8
    num_scenes: int = 32
    min_segment: int = 4
    max_segment: int = 10
    revisit_prob: float = 0.5
    min_revisit_gap: int = 16  # frames a scene must have been off screen before it may come back
    motion: float = 0.1  # camera speed in pixels per frame
    turn: float = 0.2  # std of the camera heading's change per frame, radians
    noise: float = 0.3  # std of the per-frame Gaussian noise
    offset_std: float = 0.0  # std of a per-scene, per-channel constant offset (0: identity only in texture)
    scene_seed: int = 0
    seed: int = 0

    def validate(self) -> None:
        if min(self.num_videos, self.frames, self.channels, self.height, self.width, self.num_scenes) < 1:
            raise ValueError(f"toy config sizes must be >= 1, got {self}")
        if not 1 <= self.min_segment <= self.max_segment:
            raise ValueError(f"need 1 <= min_segment <= max_segment, got {self.min_segment}, {self.max_segment}")
        if not 0.0 <= self.revisit_prob <= 1.0:
            raise ValueError(f"revisit_prob must be in [0, 1], got {self.revisit_prob}")
        if min(self.min_revisit_gap, self.motion, self.turn, self.noise, self.offset_std) < 0:
            raise ValueError(f"min_revisit_gap, motion, turn, noise and offset_std must be >= 0, got {self}")


# The base config is the `cuts` regime; `smooth` changes only these values.
REGIMES: dict[str, dict] = {
    "cuts": {},
    "smooth": {"frames": 192, "min_segment": 24, "max_segment": 48, "revisit_prob": 0.6, "noise": 0.03, "motion": 0.15},
}


def regime_config(name: str, **overrides) -> ToyConfig:
    if name not in REGIMES:
        raise ValueError(f"unknown toy regime '{name}'; choose one of {sorted(REGIMES)}")
    return replace(ToyConfig(), **{**REGIMES[name], **overrides})


@dataclass
class SceneBank:
    """Plane-wave parameters of every scene (float64 for reproducible rendering)."""

    freqs: torch.Tensor  # [S, C, M, 2] cycles per pixel along (y, x)
    phases: torch.Tensor  # [S, C, M]
    amps: torch.Tensor  # [S, C, M]
    offsets: torch.Tensor  # [S, C]


def make_scene_bank(cfg: ToyConfig) -> SceneBank:
    gen = torch.Generator().manual_seed(cfg.scene_seed)
    shape = (cfg.num_scenes, cfg.channels, WAVES_PER_CHANNEL)
    # frequency: uniform orientation, magnitude in [MIN, MAX] cycles across the frame's shorter side
    angle = torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 * math.pi
    cycles = MIN_CYCLES_PER_FRAME + torch.rand(*shape, generator=gen, dtype=torch.float64) * (MAX_CYCLES_PER_FRAME - MIN_CYCLES_PER_FRAME)
    freqs = torch.stack([angle.sin(), angle.cos()], dim=-1) * (cycles / min(cfg.height, cfg.width))[..., None]
    phases = torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 * math.pi
    amps = torch.randn(*shape, generator=gen, dtype=torch.float64)
    # a sum of M cosines with amplitudes a has variance sum(a^2) / 2; scale it to about 1
    amps = amps * math.sqrt(2) / amps.norm(dim=-1, keepdim=True)
    offsets = cfg.offset_std * torch.randn(cfg.num_scenes, cfg.channels, generator=gen, dtype=torch.float64)
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
    """Scene id of every frame: segments of random length; later segments may revisit scenes that
    have been off screen for at least `min_revisit_gap` frames."""
    ids: list[int] = []
    last_seen: dict[int, int] = {}  # scene -> index of its last frame so far
    unseen = torch.randperm(cfg.num_scenes, generator=gen).tolist()
    while len(ids) < cfg.frames:
        length = int(torch.randint(cfg.min_segment, cfg.max_segment + 1, (1,), generator=gen))
        revisitable = sorted(s for s, last in last_seen.items() if len(ids) - 1 - last >= cfg.min_revisit_gap)
        revisit = bool(torch.rand(1, generator=gen) < cfg.revisit_prob)
        if revisitable and (revisit or not unseen):
            scene = revisitable[int(torch.randint(len(revisitable), (1,), generator=gen))]
        elif unseen:
            scene = unseen.pop()
        else:  # every scene shown and none off screen long enough: keep the current one
            scene = ids[-1]
        ids += [scene] * length
        last_seen[scene] = len(ids) - 1
    return ids[: cfg.frames]


def segment_index(ids: list[int]) -> list[int]:
    """Segment number of every frame (a segment is a run of one scene)."""
    out, seg = [], 0
    for t, scene in enumerate(ids):
        seg += t > 0 and scene != ids[t - 1]
        out.append(seg)
    return out


def make_video(cfg: ToyConfig, bank: SceneBank, index: int) -> tuple[torch.Tensor, list[int]]:
    """Video `index`: (latents [T, C, H, W] float32, scene id of every frame)."""
    gen = video_generator(cfg, index)
    ids = scene_schedule(cfg, gen)
    frames = []
    for t, scene in enumerate(ids):
        if t == 0 or scene != ids[t - 1]:  # a new segment starts at a random offset and heading
            shift = torch.rand(2, generator=gen, dtype=torch.float64) * torch.tensor([cfg.height, cfg.width])
            heading = torch.rand(1, generator=gen, dtype=torch.float64) * 2 * math.pi
        else:  # the camera drifts: the heading turns a little every frame
            heading = heading + cfg.turn * torch.randn(1, generator=gen, dtype=torch.float64)
            shift = shift + cfg.motion * torch.cat([heading.sin(), heading.cos()])
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
    segments = {name: segment_index(ids) for name, ids in scenes.items()}
    # written last: a folder with scenes.json is complete
    atomic_write_text(json.dumps({"config": asdict(cfg), "videos": scenes, "segments": segments}) + "\n", out / SCENES_FILE)
    return out


def parse_args(argv=None) -> tuple[ToyConfig, Path]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("toydatasets/toy"), help="output folder (default: %(default)s)")
    p.add_argument("--regime", choices=sorted(REGIMES), default="cuts", help="base values of the flags below (default: %(default)s)")
    for name, value in asdict(ToyConfig()).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None,
                       help=f"default {value} (cuts), {REGIMES['smooth'].get(name, value)} (smooth)")
    args = vars(p.parse_args(argv))
    out, regime = args.pop("out"), args.pop("regime")
    try:
        cfg = regime_config(regime, **{k: v for k, v in args.items() if v is not None})
        cfg.validate()
        return cfg, out
    except ValueError as err:
        p.error(str(err))  # one usage line and exit 2 instead of a traceback


def main(argv=None) -> None:
    cfg, out = parse_args(argv)
    write_toy_dataset(cfg, out)
    print(f"wrote {cfg.num_videos} videos [T={cfg.frames}, C={cfg.channels}, H={cfg.height}, W={cfg.width}] to {out}")


if __name__ == "__main__":
    main()
