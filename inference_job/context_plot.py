"""PNG of one video's context log: for every block (x: its first frame) the attended frames (y),
coloured by their temporal RoPE position, sized by how many of the frame's tokens were attended.

Prompt switches are vertical lines at the first frame of the switching block, labelled with the new
segment (dashed: a switch; solid: a hard cut). The same picture for every method shows at a glance how they differ: native's band of recent
frames at rising positions, ∞-RoPE's band at bounded positions with flushes and cuts, latentmem's
retrieved frames far below the band at position 0, Deep Forcing's partial frames. Magenta rings mark
retrieved entries re-encoded under the new prompt for that block (latentmem's `recache_on_retrieve`).
Uses matplotlib's object API with the Agg canvas (no pyplot global state, no display needed).
"""
from __future__ import annotations

import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from utils.atomic import atomic_path


def context_points(log: list[dict]) -> tuple[list[int], list[int], list[int], list[int]]:
    """Flatten a context log into (block first frame, attended frame, temporal position, tokens) per key;
    keys of never-written cache slots (∞-RoPE's flush of a partly filled window) have no frame and are skipped."""
    blocks, frames, positions, tokens = [], [], [], []
    for entry in log:
        for frame, position, count in entry["keys"]:
            if frame is not None:
                blocks.append(entry["first_frame"])
                frames.append(frame)
                positions.append(position)
                tokens.append(count)
    return blocks, frames, positions, tokens


def segment_boundaries(log: list[dict]) -> list[tuple[int, int, bool]]:
    """(first frame, new segment, hard cut) of every block that starts a new prompt segment."""
    return [(e["first_frame"], e["scene"], bool(e["switch"]["cut"])) for e in log if e.get("switch")]


def reencoded_points(log: list[dict]) -> tuple[list[int], list[int]]:
    """(block first frame, frame) of every retrieved entry re-encoded for that block."""
    blocks, frames = [], []
    for entry in log:
        for frame in (entry.get("retrieval") or {}).get("reencoded_frames", []):  # latentmem entries only
            blocks.append(entry["first_frame"])
            frames.append(frame)
    return blocks, frames


def plot_context(log: list[dict], num_frames: int, path: str | os.PathLike, title: str) -> None:
    """Write the plot of `log` (entries as in RolloutResult.context_log) to `path`."""
    blocks, frames, positions, tokens = context_points(log)
    fig = Figure(figsize=(6, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([0, num_frames], [0, num_frames], color="0.8", linestyle="--", linewidth=1, label="block's first frame")
    if frames:
        full = max(tokens)
        sizes = [4 + 20 * n / full for n in tokens]
        points = ax.scatter(blocks, frames, c=positions, s=sizes, cmap="viridis", label="attended frame")
        fig.colorbar(points, ax=ax, label="temporal RoPE position")
    boundaries = segment_boundaries(log)
    for frame, _, cut in boundaries:
        ax.axvline(frame, color="tab:red", linestyle="-" if cut else "--", linewidth=1)
    if boundaries:  # labelled above the axes, clear of the legend and the points
        top = ax.secondary_xaxis("top")
        top.set_xticks([f for f, _, _ in boundaries], labels=[f"seg {s}" for _, s, _ in boundaries], color="tab:red",
                       fontsize="x-small")
    reencoded = reencoded_points(log)
    if reencoded[0]:
        ax.scatter(*reencoded, s=60, facecolors="none", edgecolors="magenta", linewidths=1, label="re-encoded on retrieval")
    ax.set(xlim=(0, num_frames), ylim=(0, num_frames), xlabel="block's first frame (latent index)",
           ylabel="attended frame (latent index)", title=title)
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
