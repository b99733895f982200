"""Deterministic seeding."""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Iterator

import torch

DEMO_SEED = 0  # seed of every random-weight demo component (generator, text encoder, VAE, retrieval encoder)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Deterministic CPU initialisation inside the block; the caller's RNG state is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


DEMO_PRESET = "demo"


def may_use_random_weights(preset: str) -> bool:
    """Only the tiny `demo` presets run without weight files (random weights from DEMO_SEED)."""
    return preset == DEMO_PRESET
