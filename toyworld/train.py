"""Train the toy-world generator (the project's causal DiT, `toyworld` preset) and its retrieval AE on CPU.

    python -m toyworld.train [--config FILE.yaml] [key=value ...]

Phase 1, generator: flow matching (pipeline/scheduler.py: x_t = (1 - σ) x0 + σ ε, the network
predicts ε - x0) on the block being denoised, given clean true frames as context in the layouts the
block loop builds (toyworld/batches.py: native window, window-relative window, retrieval memory).
Most timesteps are the rollout's few denoising steps, the rest uniform over the schedule table.
Phase 2, retrieval AE: the project's autoencoder and loss (ae/) on chunks of consecutive views, so
the `ae` descriptor of the experiment is trained on this world like the paper's is on its latents.

Training worlds are seeds 0 .. num_worlds - 1; the experiment evaluates on other seeds, so the
generator cannot know a place it has not seen in its context. Outputs in `out_dir`:

    generator_state.pt / ae_state.pt   resumable state (weights, optimizer, step, RNG states, losses)
    generator.pt                       final generator {"model", "model_preset", "world", "train"}
    ae.pt                              final AE in the released layout {"model", "config"}
    train_log.json                     losses and wall times of both phases

Every file is written atomically; a killed run continues from its last state file with the same
RNG state, so the result does not depend on interruptions.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from ae.collapse import embedding_stats, is_collapsed
from ae.losses import LossConfig, autoencoder_loss_terms
from ae.model import AEConfig, RetrievalAutoencoder
from pipeline.rollout_config import RolloutConfig
from pipeline.scheduler import FlowMatchSchedule
from toydatasets.toy_world import KINDS, WorldConfig, make_world, sample_trajectory, views
from toyworld.batches import LAYOUTS, sample_sequence
from toyworld.cli import config_from_argv
from toyworld.rollouts import toy_budget
from toyworld.sequence_attention import SequenceAttention
from utils.atomic import atomic_torch_save, atomic_write_text
from utils.config import ConfigError, config_to_dict
from utils.seeding import seeded
from wan.geometry import LatentGeometry
from wan.model import CausalWanModel, TextContext
from wan.model_config import MODEL_PRESETS, model_preset
from wan.rope import Rope3D


@dataclass
class ToyAEConfig:
    steps: int = 400
    batch_size: int = 8
    seq_len: int = 8  # consecutive frames per chunk (the smoothness and SeqDelta terms act along it)
    latent_dim: int = 64
    hidden_dims: list[int] = field(default_factory=lambda: [32, 64])
    lr: float = 1e-3
    # λ_s; the other loss weights are the paper's (ae.losses.LossConfig). At the paper's 1.0 the embedding
    # collapsed on this data (every descriptor the same after 400 steps); 0.1 keeps it spread
    smooth: float = 0.1


@dataclass
class ToyTrainConfig:
    world: WorldConfig = field(default_factory=WorldConfig)
    rollout: RolloutConfig = field(default_factory=toy_budget)  # block size, window, sink, K, R, steps
    ae: ToyAEConfig = field(default_factory=ToyAEConfig)
    model_preset: str = "toyworld"
    out_dir: str = "runs/toyworld"
    num_worlds: int = 64  # training worlds: seeds 0 .. num_worlds - 1
    max_frames: int = 72  # target blocks start anywhere before this frame (three loop periods)
    # sampling weight of every context layout (toyworld/batches.py); memory is useful only in loops past
    # one period, the skill under test, so most batches carry memory and most trajectories are loops
    layout_weights: dict[str, float] = field(default_factory=lambda: {"native": 1.0, "window": 1.0, "memory_window": 3.0})
    loop_fraction: float = 0.7
    steps: int = 3300
    batch_size: int = 8
    lr: float = 2e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 1.0
    step_timestep_fraction: float = 0.75  # share of samples at the rollout's own denoising timesteps
    checkpoint_every: int = 100
    seed: int = 0
    threads: int = 1  # more than one thread per process was slower on the shared 2-core machine

    def validate(self) -> None:
        self.world.validate()
        self.rollout.validate()
        if self.model_preset not in MODEL_PRESETS:
            raise ConfigError(f"model_preset '{self.model_preset}' is not one of {sorted(MODEL_PRESETS)}")
        if model_preset(self.model_preset).in_dim != self.world.channels:
            raise ConfigError(f"model_preset '{self.model_preset}' takes {model_preset(self.model_preset).in_dim} channels, "
                              f"world.channels is {self.world.channels}")
        for key in ("num_worlds", "steps", "batch_size", "checkpoint_every", "threads"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.max_frames < 2 * self.rollout.num_frame_per_block:
            raise ConfigError(f"max_frames {self.max_frames} must hold at least two blocks of {self.rollout.num_frame_per_block}")
        if set(self.layout_weights) != set(LAYOUTS) or min(self.layout_weights.values()) < 0 or not sum(self.layout_weights.values()) > 0:
            raise ConfigError(f"layout_weights needs a weight >= 0 for each of {list(LAYOUTS)} (not all 0), got {dict(self.layout_weights)}")
        if not 0 <= self.loop_fraction <= 1:
            raise ConfigError(f"loop_fraction must be in [0, 1], got {self.loop_fraction}")
        if not 0 <= self.step_timestep_fraction <= 1:
            raise ConfigError(f"step_timestep_fraction must be in [0, 1], got {self.step_timestep_fraction}")
        if self.ae.steps < 0 or self.ae.seq_len < 3:
            raise ConfigError(f"ae.steps must be >= 0 and ae.seq_len >= 3, got {self.ae.steps}, {self.ae.seq_len}")


def train_worlds(cfg: ToyTrainConfig) -> list[torch.Tensor]:
    return [make_world(cfg.world, seed) for seed in range(cfg.num_worlds)]


def null_prompt(model: CausalWanModel, batch: int) -> TextContext:
    """The toy world has no text: every sample gets the same all-zero prompt embedding [B, 1, text_dim]."""
    param = next(model.parameters())
    return model.encode_text(torch.zeros(batch, 1, model.cfg.text_dim, device=param.device, dtype=param.dtype))


def generator_loss(model: CausalWanModel, rope: Rope3D, schedule: FlowMatchSchedule, step_timesteps: torch.Tensor,
                   worlds: list[torch.Tensor], cfg: ToyTrainConfig, g: torch.Generator) -> torch.Tensor:
    """Flow-matching MSE on the target block of one sampled batch of sequences."""
    seq = sample_sequence(worlds, cfg.world, cfg.rollout, cfg.batch_size, cfg.max_frames, cfg.layout_weights, cfg.loop_fraction, g)
    x0, nt = seq.frames, seq.num_target  # x0: [B, S, C, H, W]
    b, s = x0.shape[:2]
    at_steps = torch.rand(b, generator=g) < cfg.step_timestep_fraction
    t = torch.where(at_steps, step_timesteps[torch.randint(0, len(step_timesteps), (b,), generator=g)],
                    schedule.timesteps[torch.randint(0, len(schedule.timesteps), (b,), generator=g)])
    t = t[:, None].expand(b, nt)
    target = x0[:, -nt:]
    noise = torch.randn(target.shape, generator=g)
    x = torch.cat([x0[:, :-nt], schedule.renoise(target, noise, t)], dim=1)
    timestep = torch.cat([torch.zeros(b, s - nt), t], dim=1)
    attn = SequenceAttention(rope, seq.positions, seq.groups, LatentGeometry.of(model.cfg, *x0.shape[-2:]).grid_hw)
    flow = model(x, timestep, null_prompt(model, b), attn)[:, -nt:]
    return (flow - (noise - target)).pow(2).mean()


def ae_config(cfg: ToyTrainConfig) -> AEConfig:
    return AEConfig(in_channels=cfg.world.channels, spatial_h=cfg.world.view, spatial_w=cfg.world.view,
                    latent_dim=cfg.ae.latent_dim, hidden_dims=tuple(cfg.ae.hidden_dims))


def ae_loss(model: RetrievalAutoencoder, worlds: list[torch.Tensor], cfg: ToyTrainConfig, g: torch.Generator) -> torch.Tensor:
    """Paper objective (reconstruction + SeqDelta + smoothness) on chunks of consecutive views."""
    chunks = []
    for _ in range(cfg.ae.batch_size):
        w = worlds[int(torch.randint(0, len(worlds), (1,), generator=g))]
        kind = KINDS[int(torch.randint(0, len(KINDS), (1,), generator=g))]
        chunks.append(views(w, sample_trajectory(cfg.world, kind, g).positions(cfg.world, cfg.ae.seq_len), cfg.world.view))
    x = torch.stack(chunks)  # [B, S, C, H, W]
    x_rec, z = model(x.flatten(0, 1))
    terms = autoencoder_loss_terms(x, x_rec.unflatten(0, x.shape[:2]), z.unflatten(0, x.shape[:2]), LossConfig(smooth_weight=cfg.ae.smooth))
    return terms["total"].mean()


def cosine_lr(step: int, total: int, lr: float, min_lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class Phase:
    name: str
    model: nn.Module
    loss: Callable[[torch.Generator], torch.Tensor]
    steps: int
    lr: float
    min_lr: float
    warmup: int
    grad_clip: float
    identity: dict  # the settings a resumed run must share with the run that wrote the state


def generator_identity(cfg: ToyTrainConfig) -> dict:
    """What the generator's training depends on (steps may grow; the AE settings do not matter)."""
    d = config_to_dict(cfg)
    for key in ("steps", "checkpoint_every", "threads", "out_dir", "ae"):
        d.pop(key)
    return d


def ae_identity(cfg: ToyTrainConfig) -> dict:
    ae = config_to_dict(cfg.ae)
    ae.pop("steps")
    return {"world": config_to_dict(cfg.world), "num_worlds": cfg.num_worlds, "seed": cfg.seed, "ae": ae}


def embedding_spread(ae: RetrievalAutoencoder, worlds: list[torch.Tensor], cfg: ToyTrainConfig) -> dict[str, float]:
    """The collapse monitor (ae/collapse.py) on one loop of views of a training world."""
    g = torch.Generator().manual_seed(cfg.seed)
    pos = sample_trajectory(cfg.world, "loop", g).positions(cfg.world, cfg.world.loop_period)
    with torch.no_grad():
        stats = embedding_stats(ae.embed(views(worlds[0], pos, cfg.world.view)))
    return {**stats, "collapsed": is_collapsed(stats)}


def run_phase(phase: Phase, cfg: ToyTrainConfig, state_path: Path, seed: int) -> dict:
    """Train `phase.model` for `phase.steps` optimizer steps, resuming from `state_path` if it exists."""
    opt = torch.optim.AdamW(phase.model.parameters(), lr=phase.lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    step, losses, seconds = 0, [], 0.0
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        if state["identity"] != phase.identity:
            raise ConfigError(f"{state_path} was written with other settings; use another out_dir or delete it to start over")
        phase.model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        g.set_state(state["data_rng"])
        torch.set_rng_state(state["torch_rng"])
        step, losses, seconds = state["step"], state["losses"], state["seconds"]
    phase.model.train()
    bar = tqdm(range(step, phase.steps), desc=phase.name, initial=step, total=phase.steps)
    start = time.perf_counter() - seconds
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, phase.steps, phase.lr, phase.min_lr, phase.warmup)
        loss = phase.loss(g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(phase.model.parameters(), phase.grad_clip)
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
        done = step + 1
        if done % cfg.checkpoint_every == 0 or done == phase.steps:
            atomic_torch_save({
                "model": phase.model.state_dict(), "optimizer": opt.state_dict(), "step": done,
                "data_rng": g.get_state(), "torch_rng": torch.get_rng_state(), "losses": losses,
                "seconds": time.perf_counter() - start, "identity": phase.identity,
            }, state_path)
    phase.model.eval()
    seconds = time.perf_counter() - start
    return {"steps": phase.steps, "losses": losses, "seconds": seconds}


def build_generator(cfg: ToyTrainConfig) -> CausalWanModel:
    with seeded(cfg.seed):
        return CausalWanModel(model_preset(cfg.model_preset))


def train(cfg: ToyTrainConfig) -> dict:
    """Both phases; returns the training log (also written to out_dir/train_log.json)."""
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    worlds = train_worlds(cfg)
    model = build_generator(cfg)
    rope = Rope3D(model.cfg.head_dim, model.cfg.rope_max_positions)
    schedule = FlowMatchSchedule(cfg.rollout.model_kwargs.timestep_shift)
    step_timesteps = schedule.step_timesteps(cfg.rollout.denoising_step_list, cfg.rollout.warp_denoising_step)
    gen = run_phase(Phase("generator", model, lambda g: generator_loss(model, rope, schedule, step_timesteps, worlds, cfg, g),
                          cfg.steps, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.grad_clip, generator_identity(cfg)),
                    cfg, out / "generator_state.pt", cfg.seed)
    atomic_torch_save({"model": model.state_dict(), "model_preset": cfg.model_preset, "world": dataclasses.asdict(cfg.world),
                       "train": config_to_dict(cfg)}, out / "generator.pt")
    with seeded(cfg.seed + 1):
        ae = RetrievalAutoencoder(ae_config(cfg))
    ae_log = run_phase(Phase("retrieval AE", ae, lambda g: ae_loss(ae, worlds, cfg, g), cfg.ae.steps, cfg.ae.lr, cfg.ae.lr / 10,
                             min(100, cfg.ae.steps), cfg.grad_clip, ae_identity(cfg)), cfg, out / "ae_state.pt", cfg.seed + 1)
    ae_log["embedding"] = embedding_spread(ae, worlds, cfg)
    atomic_torch_save({"model": ae.state_dict(), "config": dataclasses.asdict(ae_config(cfg))}, out / "ae.pt")
    log = {"generator": gen, "ae": ae_log, "threads": cfg.threads}
    atomic_write_text(json.dumps(log), out / "train_log.json")
    return log


def load_generator(path: str | Path, device: torch.device | str = "cpu") -> tuple[CausalWanModel, WorldConfig]:
    """The trained generator (eval mode, no grad) and the world settings it was trained on."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"toy generator '{path}' not found; train it with: python -m toyworld.train")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = CausalWanModel(model_preset(ckpt["model_preset"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval().requires_grad_(False), WorldConfig(**ckpt["world"])


def main(argv: list[str] | None = None) -> None:
    cfg = config_from_argv(ToyTrainConfig, __doc__, "steps=100 world.width=64", argv)
    log = train(cfg)
    gen, ae = log["generator"], log["ae"]
    print(json.dumps({"generator_final_loss": sum(gen["losses"][-100:]) / max(1, len(gen["losses"][-100:])),
                      "generator_seconds": round(gen["seconds"], 1), "ae_seconds": round(ae["seconds"], 1),
                      "ae_embedding": ae["embedding"], "threads": cfg.threads, "out_dir": cfg.out_dir}))


if __name__ == "__main__":
    main()
