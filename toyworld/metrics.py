"""What the toy experiment measures against ground truth.

A generated frame t is a *revisit* when a view seen at least `window` frames earlier (so outside
what a sliding window of that size still attends) overlaps its true view by at least
`min_overlap`; its *first visit* is the earliest such frame with the largest overlap. Errors are
mean squared differences in the latent space, per frame.
"""
from __future__ import annotations

import torch

from toydatasets.toy_world import WorldConfig, torus_delta, view_overlap


def frame_errors(generated: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """generated, truth: [B, F, C, H, W] -> [B, F] mean squared error of every frame."""
    return (generated.float() - truth.float()).pow(2).flatten(2).mean(dim=2)


def pairwise_overlap(positions: torch.Tensor, world: WorldConfig) -> torch.Tensor:
    """positions: [B, F, 2] -> [B, F, F] view overlap of every pair of frames."""
    return view_overlap(positions[:, :, None], positions[:, None, :], world)


def first_visits(positions: torch.Tensor, world: WorldConfig, window: int, min_overlap: float) -> torch.Tensor:
    """-> [B, F] long: the first visit of every revisit frame, -1 for frames that are not revisits."""
    overlap = pairwise_overlap(positions, world)  # [B, t, s]
    f = positions.shape[1]
    t = torch.arange(f)
    old_enough = t[None, :] <= t[:, None] - window  # [t, s]: s at least `window` frames before t
    overlap = torch.where(old_enough[None], overlap, torch.zeros(()))
    best = overlap.max(dim=2).values  # [B, F]
    # earliest s reaching the best overlap: argmax of a mask returns the first True
    first = (overlap == best[..., None]).float().argmax(dim=2)
    return torch.where(best >= min_overlap, first, torch.full_like(first, -1))


def aligned_difference(a: torch.Tensor, b: torch.Tensor, pos_a: torch.Tensor, pos_b: torch.Tensor, world: WorldConfig) -> float:
    """Mean squared difference of two views on the world cells both show (nan if none).

    a, b: [C, V, V] views whose top-left corners are pos_a, pos_b ([2] long, on the torus).
    """
    v = world.view
    d = (int(torus_delta(pos_a[0], pos_b[0], world.height)), int(torus_delta(pos_a[1], pos_b[1], world.width)))
    if abs(d[0]) >= v or abs(d[1]) >= v:
        return float("nan")
    # cell (i, j) of b is cell (i + dy, j + dx) of a
    ra, rb = slice(max(0, d[0]), v + min(0, d[0])), slice(max(0, -d[0]), v - max(0, d[0]))
    ca, cb = slice(max(0, d[1]), v + min(0, d[1])), slice(max(0, -d[1]), v - max(0, d[1]))
    return (a[:, ra, ca].float() - b[:, rb, cb].float()).pow(2).mean().item()


def revisit_consistency(generated: torch.Tensor, positions: torch.Tensor, first: torch.Tensor, world: WorldConfig,
                        from_frame: int) -> torch.Tensor:
    """[B, F] aligned MSE between each revisit frame and its first visit, for first visits that were
    generated (index >= from_frame, i.e. not given as the opening); nan elsewhere."""
    out = torch.full(first.shape, float("nan"))
    for b, t in (first >= from_frame).nonzero().tolist():
        s = int(first[b, t])
        out[b, t] = aligned_difference(generated[b, s], generated[b, t], positions[b, s], positions[b, t], world)
    return out


def retrieval_hits(context_log: list[dict], positions: torch.Tensor, revisit: torch.Tensor, world: WorldConfig, block: int,
                   min_overlap: float) -> tuple[int, int]:
    """(hits, retrieved) over blocks that contain a revisit frame: a retrieved frame is a hit when its
    true view overlaps the true view of a frame of the block by at least `min_overlap`.

    context_log: the rollout's context log; latentmem blocks hold their decision under `retrieval`
    (`selected_frames`: [B][k] global frame indices), other blocks and methods hold none.
    """
    hits = total = 0
    for entry in (block["retrieval"] for block in context_log if block.get("retrieval")):
        start = entry["block_start_frame"]
        for b, selected in enumerate(entry["selected_frames"]):
            if not bool(revisit[b, start : start + block].any()):
                continue
            sel = positions[b, torch.tensor(selected)]  # [k, 2]
            overlap = view_overlap(sel[:, None], positions[b, start : start + block][None], world)  # [k, block]
            hits += int((overlap.max(dim=1).values >= min_overlap).sum())
            total += len(selected)
    return hits, total


def nanmean(x: torch.Tensor) -> float:
    x = x[~torch.isnan(x)]
    return float(x.mean()) if x.numel() else float("nan")
