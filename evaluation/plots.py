"""Report figures (matplotlib object API on the Agg canvas: no global state, no display)."""
from __future__ import annotations

import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from utils.atomic import atomic_path

# (key in a run's mean curves, panel title, y label); x is seconds except for S(Δ) (gap in seconds)
DRIFT_PANELS = (
    ("D_latent_mean", "D(t): channel-mean latents vs opening", "cosine"),
    ("D_ae", "D(t): retrieval-AE embedding vs opening", "cosine"),
    ("D_dino", "D(t): DINO ViT-B/16 features vs opening", "cosine"),
    ("S_latent_mean", "S(Δ): channel-mean latents", "cosine"),
    ("S_ae", "S(Δ): retrieval-AE embedding", "cosine"),
    ("S_dino", "S(Δ): DINO ViT-B/16 features", "cosine"),
    ("delta_e", "colour drift ΔE vs first second", "ΔE (CIE76)"),
    ("luminance_drift", "exposure drift vs first second", "Δ luminance Y"),
    ("sharpness_ratio", "sharpness vs first second", "Laplacian variance ratio"),
)


def _save(fig: Figure, path: str | os.PathLike) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def plot_drift(title: str, runs: list[tuple[str, dict]], path: str | os.PathLike, dpi: int) -> None:
    """One figure of a backbone: a panel per drift metric, a line per run (label, {key: (x, y)})."""
    fig = Figure(figsize=(13, 10), dpi=dpi)
    FigureCanvasAgg(fig)
    for index, (key, panel, ylabel) in enumerate(DRIFT_PANELS):
        ax = fig.add_subplot(3, 3, index + 1)
        for label, curves in runs:
            if key in curves:
                x, y = curves[key]
                ax.plot(x, y, label=label, linewidth=1.2)
        xlabel = "gap Δ (s)" if key.startswith("S_") else "time (s)"
        ax.set(title=panel, xlabel=xlabel, ylabel=ylabel)
        ax.title.set_fontsize("small")
        if not ax.lines:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="0.5")
        elif index == 0:
            ax.legend(fontsize="x-small")
    fig.suptitle(title, fontsize="medium")
    _save(fig, path)


def plot_retrieval_diagnostics(diag: dict, title: str, path: str | os.PathLike, seconds_per_frame: float,
                               dpi: int) -> None:
    """Age histogram, reuse frequency and similarity over time of one run's retrievals."""
    fig = Figure(figsize=(13, 3.8), dpi=dpi)
    FigureCanvasAgg(fig)
    ages, counts = diag["age_histogram"]["edges"], diag["age_histogram"]["counts"]
    ax = fig.add_subplot(1, 3, 1)
    ax.bar([e * seconds_per_frame for e in ages[:-1]], counts, width=(ages[1] - ages[0]) * seconds_per_frame if len(ages) > 1 else 1,
           align="edge", color="tab:blue")
    ax.set(title="age of retrieved frames", xlabel="query time − retrieved time (s)", ylabel="retrievals")
    times = diag["reuse"]["times_retrieved"]
    ax = fig.add_subplot(1, 3, 2)
    ax.bar([int(k) for k in times], list(times.values()), color="tab:orange")
    ax.set(title="reuse of the same frames", xlabel="times a frame was retrieved", ylabel="frames")
    sim = diag["similarity_over_time"]
    ax = fig.add_subplot(1, 3, 3)
    ax.plot([q * seconds_per_frame for q in sim["query_frame"]], sim["mean_similarity"], marker=".", color="tab:green")
    ax.set(title="similarity of retrieved frames", xlabel="query time (s)", ylabel="mean cosine similarity")
    fig.suptitle(title, fontsize="medium")
    _save(fig, path)
