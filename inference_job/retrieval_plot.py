"""PNG of one video's retrieval decisions: query frame (x) vs retrieved frame (y), coloured by similarity.

Uses matplotlib's object API with the Agg canvas (no pyplot global state, no display needed).
"""
from __future__ import annotations

import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from utils.atomic import atomic_path


def retrieval_points(log: list[dict], row: int = 0) -> tuple[list[int], list[int], list[float] | None]:
    """Flatten a rollout's retrieval log (batch row `row`) into (query frames, retrieved frames, similarities)."""
    queries, retrieved, sims = [], [], []
    has_sims = all(entry["similarities"] is not None for entry in log)
    for entry in log:
        frames = entry["selected_frames"][row]
        queries += [entry["query_frame"]] * len(frames)
        retrieved += frames
        if has_sims:
            sims += entry["similarities"][row]
    return queries, retrieved, sims if has_sims else None


def plot_retrieval(log: list[dict], num_frames: int, path: str | os.PathLike, title: str, row: int = 0) -> None:
    """Write the plot of batch row `row` of `log` (entries as in RolloutResult.retrieval_log) to `path`."""
    queries, retrieved, sims = retrieval_points(log, row)
    fig = Figure(figsize=(6, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([0, num_frames], [0, num_frames], color="0.8", linestyle="--", linewidth=1, label="query frame")
    if sims is None:
        ax.scatter(queries, retrieved, c="tab:gray", s=18, label="retrieved (random)")
    else:
        points = ax.scatter(queries, retrieved, c=sims, cmap="viridis", s=18, label="retrieved")
        fig.colorbar(points, ax=ax, label="cosine similarity to the query")
    ax.set(xlim=(0, num_frames), ylim=(0, num_frames), xlabel="query frame (latent index)",
           ylabel="retrieved frame (latent index)", title=title)
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
