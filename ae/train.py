"""Training loop of the retrieval autoencoder (SPEC §2): AdamW on chunks of S frames with the
reconstruction + SeqDelta + smoothness objective; one process, or many under torchrun (or
`accelerate launch` on GPUs) through `accelerate` (DDP).

Every process reads the same per-epoch chunk plan; `accelerate` gives each process its slice of
every global batch of `batch_size` chunks (`split_batches`), so the updates do not depend on the
number of processes. Outputs in `output_dir`:

    last.pt            every epoch, for resuming (model, optimizer, epoch, RNG, history)
    best.pt            lowest validation total loss so far
    epoch_XXXX.pt      every `save_every` epochs (XXXX: the 0-based epoch just finished)
    tb/                TensorBoard: every loss term, train (per `log_every` steps and per epoch)
                       and val (per epoch)

All checkpoints use the released layout `{"model", "config", "epoch", "optimizer", "scaler", ...}`
with `config` a plain dict that `ae.model.load_retrieval_autoencoder` reads, plus `data_split`
(the training and validation video names): a resumed run must see the same split, or frames of
validation videos would leak into training.
"""
from __future__ import annotations

import dataclasses
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from ae.collapse import EmbeddingSpread, warn_if_collapsed
from ae.data import build_chunk_datasets
from ae.losses import LossConfig, autoencoder_loss_terms
from ae.model import AEConfig, RetrievalAutoencoder, reference_init_
from utils.atomic import atomic_torch_save
from utils.config import ConfigError, config_to_dict
from utils.seeding import seed_everything
from utils.checkpoint_io import load_checkpoint

logger = logging.getLogger(__name__)

LOSS_TERMS = ("rec", "seqdelta", "smooth", "total")
DEVICES = ("auto", "cuda", "cpu")


@dataclass
class AETrainConfig(LossConfig, AEConfig):
    """The flat training YAML: the architecture (AEConfig fields), the objective (LossConfig fields),
    and the data, optimisation and run settings below."""

    # data
    data_dir: str = "toydatasets"  # folder of *.pt latent videos, or a latent corpus (index.json)
    seq_len: int = 8  # S: consecutive frames per chunk
    chunks_per_video: int = 16  # chunks drawn from every training video per epoch (1: the reference's epoch)
    val_split: float = 0.1  # fraction of videos held out for validation
    num_workers: int = 2  # DataLoader workers per process
    # optimisation
    batch_size: int = 128  # chunks per optimizer step, summed over all processes
    lr: float = 3e-4
    weight_decay: float = 1e-4
    epochs: int = 400
    grad_clip: float = 1.0  # max global gradient norm
    use_amp: bool = True  # bf16 autocast on CUDA; CPU always runs float32
    reference_init: bool = False  # Kaiming / Xavier weights and zero biases, as the reference trainer
    plateau_patience: int = 0  # stop after this many epochs without a new best validation rec (0: run all epochs)
    plateau_min_delta: float = 0.01  # relative improvement of the validation rec that counts as a new best
    # run
    device: str = "auto"  # auto (CUDA if available, else CPU) | cuda | cpu; under torchrun, CPU processes use gloo
    output_dir: str = "runs/ae_delta"
    save_every: int = 50  # epochs between kept epoch_XXXX.pt checkpoints
    log_every: int = 20  # optimizer steps between TensorBoard points of the training losses
    resume: bool = True  # continue from output_dir/last.pt when it exists
    seed: int = 777

    def validate(self) -> None:
        AEConfig.validate(self)
        LossConfig.validate(self)
        for key in ("seq_len", "chunks_per_video", "batch_size", "epochs", "save_every", "log_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not 0.0 < self.val_split < 1.0:
            raise ConfigError(f"val_split must be in (0, 1) (the best checkpoint is chosen on validation), got {self.val_split}")
        for key in ("weight_decay", "num_workers", "plateau_patience", "plateau_min_delta"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        for key in ("lr", "grad_clip"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be > 0, got {getattr(self, key)}")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {list(DEVICES)}, got '{self.device}'")

    def use_cpu(self) -> bool:
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device is 'cuda' but CUDA is not available; set device=cpu or device=auto")
        return self.device == "cpu" or (self.device == "auto" and not torch.cuda.is_available())

    def model_config(self) -> AEConfig:
        return AEConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(AEConfig)})

    def loss_config(self) -> LossConfig:
        return LossConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(LossConfig)})


@dataclass
class TrainResult:
    model: RetrievalAutoencoder  # final weights (unwrapped, on the training device)
    history: list[dict]  # per epoch: {"epoch", "train": {term: mean}, "val": {term: mean}}
    best_epoch: int
    best_val: float


def chunk_forward(model, x: torch.Tensor, loss: LossConfig, autocast: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """x: [B, S, C, H, W] chunks -> (every loss term per chunk, each [B]; embeddings z: [B, S, D])."""
    x = x.float()  # chunks arrive in the stored dtype (e.g. bf16) and are upcast here, on the device
    b, s = x.shape[:2]
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        x_rec, z = model(x.flatten(0, 1))
    z = z.unflatten(0, (b, s))
    return autoencoder_loss_terms(x, x_rec.unflatten(0, (b, s)), z, loss), z


def chunk_loss_terms(model, x: torch.Tensor, loss: LossConfig, autocast: bool) -> dict[str, torch.Tensor]:
    """x: [B, S, C, H, W] chunks -> every loss term per chunk, each [B] (bf16 autocast if `autocast`)."""
    return chunk_forward(model, x, loss, autocast)[0]


@torch.no_grad()
def evaluate(model, loader, loss: LossConfig, accelerator: Accelerator, autocast: bool) -> tuple[dict[str, float], dict[str, float]]:
    """Over all validation chunks (gathered from every process): (mean of every loss term,
    collapse-monitor numbers of their frame embeddings)."""
    model.eval()
    loader.set_epoch(0)  # the same validation chunks every epoch, so the losses are comparable
    rows, spread = [], EmbeddingSpread()
    for x in loader:
        terms, z = chunk_forward(model, x, loss, autocast)
        rows.append(accelerator.gather_for_metrics(torch.stack([terms[k] for k in LOSS_TERMS], dim=1)))
        spread.update(accelerator.gather_for_metrics(z.float()).flatten(0, 1))  # gathered per chunk, as the losses
    model.train()
    means = torch.cat(rows).mean(dim=0).tolist()
    return dict(zip(LOSS_TERMS, means)), spread.stats()


def plateaued(history: list[dict], patience: int, min_delta: float) -> bool:
    """True when the last `patience` epochs brought no validation rec below (1 - min_delta) x the best before them."""
    if patience < 1 or len(history) <= patience:
        return False
    recs = [h["val"]["rec"] for h in history]
    return min(recs[-patience:]) > (1 - min_delta) * min(recs[:-patience])


def _rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _checkpoint(cfg: AETrainConfig, model, optimizer, epoch: int, split: dict, history: list[dict], best_epoch: int, best_val: float) -> dict:
    return {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": config_to_dict(cfg),
        "epoch": epoch,
        "optimizer": optimizer.state_dict(),
        "scaler": {},  # bf16 autocast needs no loss scaling; the key keeps the released layout
        "data_split": split,
        "history": history,
        "best_epoch": best_epoch,
        "best_val": best_val,
        "rng": _rng_state(),
    }


def _resume(path: Path, cfg: AETrainConfig, split: dict, model, optimizer) -> dict:
    """Load `path` into model and optimizer (strict) and return the checkpoint."""
    ckpt = load_checkpoint(path, "AE training checkpoint", "start over with resume=false, or copy a good "
                           "epoch_XXXX.pt of this output_dir to last.pt")
    trained = AEConfig.from_training_config(ckpt["config"])
    changed = {
        f.name: (getattr(trained, f.name), getattr(cfg, f.name))
        for f in dataclasses.fields(AEConfig)
        if getattr(trained, f.name) != getattr(cfg, f.name)
    }
    if changed:
        raise ConfigError(
            f"{path} was trained with other model settings {changed} (checkpoint, config); "
            "set a new output_dir or resume=false to start over"
        )
    if ckpt["data_split"] != split:
        moved = {part: sorted(set(split[part]) ^ set(ckpt["data_split"][part])) for part in split}
        raise ConfigError(
            f"{path} was trained on another train/validation split of the videos (changed: {moved}); "
            "resuming would train on validation videos. Restore the data folder, or start over in a new output_dir"
        )
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    _set_rng_state(ckpt["rng"])
    return ckpt


def _build_loaders(cfg: AETrainConfig, num_processes: int, pin_memory: bool):
    if cfg.batch_size % num_processes:
        raise ConfigError(f"batch_size {cfg.batch_size} must be divisible by the number of processes {num_processes}")
    frame_shape = (cfg.in_channels, cfg.spatial_h, cfg.spatial_w)
    train_ds, val_ds = build_chunk_datasets(cfg.data_dir, frame_shape, cfg.seq_len, cfg.chunks_per_video, cfg.val_split, cfg.seed)
    if len(train_ds) < cfg.batch_size:
        raise ConfigError(
            f"an epoch has {len(train_ds)} training chunks ({len(train_ds.videos)} videos x chunks_per_video "
            f"{cfg.chunks_per_video}), fewer than batch_size {cfg.batch_size}; raise chunks_per_video or lower batch_size"
        )
    # the dataset itself shuffles (seeded per epoch); drop_last keeps every step a full global batch
    # pinned batches let accelerate's non_blocking copies overlap the transfer with the previous step (CUDA)
    train = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=False, drop_last=True, num_workers=cfg.num_workers,
                       pin_memory=pin_memory)
    val = DataLoader(val_ds, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers, pin_memory=pin_memory)
    split = {"train": [v.name for v in train_ds.videos], "val": [v.name for v in val_ds.videos]}
    return train, val, split


def _train_epoch(model, optimizer, loader, cfg: AETrainConfig, accelerator: Accelerator, autocast: bool, writer, step: int, desc: str) -> tuple[dict[str, float], int]:
    """One pass over the epoch's training chunks; returns (mean of every loss term, global step after it)."""
    loss = cfg.loss_config()
    sums = torch.zeros(len(LOSS_TERMS), device=accelerator.device)
    for x in tqdm(loader, desc=desc, leave=False, disable=not accelerator.is_main_process):
        terms = chunk_loss_terms(model, x, loss, autocast)
        accelerator.backward(terms["total"].mean())
        accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        means = torch.stack([terms[k].detach().mean() for k in LOSS_TERMS])
        sums += means
        step += 1
        if step % cfg.log_every == 0:
            logged = accelerator.reduce(means, reduction="mean").tolist()  # a collective: every rank calls it
            if writer:
                for name, value in zip(LOSS_TERMS, logged):
                    writer.add_scalar(f"train/{name}", value, step)
    # every process averaged an equal share of every batch, so the mean of their means is the global mean
    return dict(zip(LOSS_TERMS, (accelerator.reduce(sums, reduction="mean") / len(loader)).tolist())), step


def _save_checkpoints(out: Path, ckpt: dict, is_best: bool, save_every: int) -> None:
    epoch = ckpt["epoch"]
    atomic_torch_save(ckpt, out / "last.pt")
    if is_best:
        atomic_torch_save(ckpt, out / "best.pt")
    if (epoch + 1) % save_every == 0:
        atomic_torch_save(ckpt, out / f"epoch_{epoch:04d}.pt")


def build_model(cfg: AETrainConfig) -> RetrievalAutoencoder:
    """The untrained AE of `cfg`: seeded, with the configured initialisation (seeds every RNG)."""
    seed_everything(cfg.seed)
    model = RetrievalAutoencoder(cfg.model_config())
    return reference_init_(model) if cfg.reference_init else model


def train_autoencoder(cfg: AETrainConfig) -> TrainResult:
    """Train (or resume) the retrieval AE as configured; returns the final model and the loss history."""
    # cpu=True is what lets accelerate join a torchrun launch on CPU (gloo) instead of running alone
    accelerator = Accelerator(cpu=cfg.use_cpu(), dataloader_config=DataLoaderConfiguration(split_batches=True, non_blocking=True))
    main = accelerator.is_main_process
    autocast = cfg.use_amp and accelerator.device.type == "cuda"
    out = Path(cfg.output_dir)
    train_loader, val_loader, split = _build_loaders(cfg, accelerator.num_processes, accelerator.device.type == "cuda")

    model = build_model(cfg).to(accelerator.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history, best_epoch, best_val, start_epoch = [], -1, float("inf"), 0
    if cfg.resume and (out / "last.pt").exists():
        ckpt = _resume(out / "last.pt", cfg, split, model, optimizer)
        history, best_epoch, best_val, start_epoch = ckpt["history"], ckpt["best_epoch"], ckpt["best_val"], ckpt["epoch"] + 1
        if main:
            logger.info("resuming %s after epoch %d", out / "last.pt", ckpt["epoch"])
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    if main:
        logger.info(
            "training on %d process(es) (%s, %s): %d steps per epoch of %d chunks (%d per process)",
            accelerator.num_processes, accelerator.distributed_type.value, accelerator.device, len(train_loader),
            cfg.batch_size, cfg.batch_size // accelerator.num_processes,
        )

    step = start_epoch * len(train_loader)
    # a resumed run drops the events an interrupted run logged after its last checkpoint
    writer = SummaryWriter(out / "tb", purge_step=step + 1) if main else None
    for epoch in tqdm(range(start_epoch, cfg.epochs), desc="epochs", initial=start_epoch, total=cfg.epochs, disable=not main):
        if plateaued(history, cfg.plateau_patience, cfg.plateau_min_delta):  # checked here so a resumed run stops too
            if main:
                logger.info("validation rec has plateaued (no %.0f %% improvement in %d epochs); stopping before epoch %d",
                            100 * cfg.plateau_min_delta, cfg.plateau_patience, epoch)
            break
        # through the prepared loader: it sets the dataset's epoch itself on every pass, from its own
        # pass counter, which a resumed run would otherwise restart at 0
        train_loader.set_epoch(epoch)
        train_means, step = _train_epoch(model, optimizer, train_loader, cfg, accelerator, autocast, writer, step, f"epoch {epoch}")
        val_means, spread = evaluate(model, val_loader, cfg.loss_config(), accelerator, autocast)
        history.append({"epoch": epoch, "train": train_means, "val": val_means, "embedding": spread})
        if val_means["total"] < best_val:
            best_epoch, best_val = epoch, val_means["total"]
        if main:
            warn_if_collapsed(spread, epoch)
            for tag, means in (("train_epoch", train_means), ("val", val_means), ("embedding", spread)):
                for name, value in means.items():
                    writer.add_scalar(f"{tag}/{name}", value, step)
            writer.flush()
            ckpt = _checkpoint(cfg, accelerator.unwrap_model(model), optimizer, epoch, split, history, best_epoch, best_val)
            _save_checkpoints(out, ckpt, best_epoch == epoch, cfg.save_every)
        accelerator.wait_for_everyone()
    if writer:
        writer.close()
    return TrainResult(accelerator.unwrap_model(model), history, best_epoch, best_val)
