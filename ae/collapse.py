"""Collapse monitor of the retrieval embedding: is every frame mapped to (nearly) the same vector?

Two numbers over a set of embeddings z: [N, D] (un-normalised, the space the losses act on):

- `mean_cosine`: mean cosine similarity over all pairs i != j (1 when every embedding points the
  same way, about 0 for random directions);
- `const_to_var`: ‖mean z‖ / sqrt(mean ‖z − mean z‖²), the constant part against the variation
  around it (large when the embedding is one point plus small noise).

Both come from running sums, so any number of frames (and processes) costs O(D) memory.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

# Variation below a tenth of the constant part: every embedding lies within about 6 degrees of the
# mean direction, so cosine ranking is decided by noise (the smoothness collapse of the toy runs
# measured ratios in the hundreds; healthy and untrained encoders stay below 3).
COLLAPSE_RATIO = 10.0


@dataclass
class EmbeddingSpread:
    """Running sums over embeddings; `update` with batches, then read `stats()`."""

    count: int = 0
    sum_unit: torch.Tensor | None = None  # [D] sum of L2-normalised embeddings
    sum_z: torch.Tensor | None = None  # [D]
    sum_sq: float = 0.0  # sum of ‖z‖²

    def update(self, z: torch.Tensor) -> None:
        """z: [N, D]."""
        z = z.detach().double().flatten(0, -2)
        unit = F.normalize(z, dim=-1).sum(dim=0)
        total = z.sum(dim=0)
        self.sum_unit = unit if self.sum_unit is None else self.sum_unit + unit.to(self.sum_unit.device)
        self.sum_z = total if self.sum_z is None else self.sum_z + total.to(self.sum_z.device)
        self.sum_sq += float(z.pow(2).sum())
        self.count += z.shape[0]

    def stats(self) -> dict[str, float]:
        """{"mean_cosine", "const_to_var"}; needs at least 2 embeddings."""
        n = self.count
        if n < 2:
            raise ValueError(f"the collapse monitor needs at least 2 embeddings, got {n}")
        # sum over i != j of u_i . u_j = ‖sum u‖² − sum ‖u_i‖², and ‖u_i‖ = 1
        mean_cosine = (float(self.sum_unit.pow(2).sum()) - n) / (n * (n - 1))
        mean = self.sum_z / n
        constant = float(mean.norm())
        variation = math.sqrt(max(self.sum_sq / n - constant**2, 0.0))
        return {"mean_cosine": mean_cosine, "const_to_var": constant / variation if variation > 0 else math.inf}


def embedding_stats(z: torch.Tensor) -> dict[str, float]:
    """Both numbers of one set z: [N, D]."""
    spread = EmbeddingSpread()
    spread.update(z)
    return spread.stats()


def is_collapsed(stats: dict[str, float]) -> bool:
    return stats["const_to_var"] > COLLAPSE_RATIO


def warn_if_collapsed(stats: dict[str, float], epoch: int) -> bool:
    """Log a warning naming the numbers when the embedding has collapsed; returns whether it has."""
    collapsed = is_collapsed(stats)
    if collapsed:
        logger.warning(
            "epoch %d: the embedding has collapsed (constant/variation %.1f > %.0f, mean pairwise cosine %.4f): "
            "every frame maps to nearly the same vector, so retrieval ranks by noise; "
            "lower smooth_weight or check the data",
            epoch, stats["const_to_var"], COLLAPSE_RATIO, stats["mean_cosine"],
        )
    return collapsed
