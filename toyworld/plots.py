"""Figures of the toy experiment: error per frame index, and a filmstrip of one loop's revisits."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from toydatasets.toy_world import WorldConfig, to_rgb  # noqa: E402
from utils.atomic import atomic_path  # noqa: E402


def plot_error_over_time(curves: dict[str, dict[str, list[float]]], opening_frames: int, loop_period: int, path: str | Path) -> None:
    """curves: method -> trajectory kind -> mean MSE per frame index."""
    kinds = sorted({k for per_kind in curves.values() for k in per_kind})
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.0), sharey=True, dpi=80)
    axes = [axes] if len(kinds) == 1 else axes
    for ax, kind in zip(axes, kinds):
        for method, per_kind in curves.items():
            ax.plot(per_kind[kind], label=method, lw=1.2)
        ax.axvspan(0, opening_frames - 0.5, color="0.9", label="ground-truth opening")
        if kind == "loop":
            for t in range(loop_period, len(next(iter(curves.values()))[kind]), loop_period):
                ax.axvline(t, color="0.5", ls=":", lw=0.8)
        ax.set_title(f"{kind}s" + (" (dotted: back at the start)" if kind == "loop" else " (no revisit)"), fontsize=9)
        ax.set_xlabel("frame")
    axes[0].set_ylabel("MSE vs true view")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def filmstrip_frames(num_frames: int, opening_frames: int, loop_period: int) -> list[int]:
    """A frame of the opening and a generated frame, each followed by its revisits one loop period later."""
    frames = []
    for first in (opening_frames // 2, opening_frames + loop_period // 4):
        frames += list(range(first, num_frames, loop_period))
    return frames


def plot_filmstrip(truth: torch.Tensor, generated: dict[str, torch.Tensor], world: WorldConfig, opening_frames: int,
                   path: str | Path) -> None:
    """truth, generated[m]: [F, C, V, V] of one loop trajectory."""
    frames = filmstrip_frames(truth.shape[0], opening_frames, world.loop_period)
    rows = {"ground truth": truth, **generated}
    fig, axes = plt.subplots(len(rows), len(frames), figsize=(0.75 * len(frames) + 1.6, 0.75 * len(rows) + 0.3), dpi=72)
    for r, (name, video) in enumerate(rows.items()):
        images = to_rgb(video[frames], scale=4)
        for c, t in enumerate(frames):
            ax = axes[r][c]
            ax.imshow(images[c].numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"t={t}", fontsize=7)
            if c == 0:
                ax.set_ylabel(name, fontsize=6, rotation=0, ha="right", va="center")
    fig.tight_layout(pad=0.2)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
