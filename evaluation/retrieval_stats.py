"""Retrieval diagnostics of a latentmem run from its `<stem>.retrieval.json` logs: how old the
retrieved frames are, how often the same frames come back, and how similar they are over time."""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from statistics import fmean

from evaluation.run_folder import RunInfo

AGE_BIN_FRAMES = 3  # histogram bins of one block


def read_logs(run: RunInfo) -> dict[str, dict]:
    """{stem: log} of the run's videos that have a retrieval log (none for native runs)."""
    logs = {}
    for stem in run.stems:
        path: Path = run.retrieval_log(stem)
        if path.is_file():
            logs[stem] = json.loads(path.read_text())
    return logs


def retrieval_events(logs: dict[str, dict]) -> list[dict]:
    """One event per retrieved frame: stem, query frame, retrieved frame, age, similarity (None if random)."""
    events = []
    for stem, log in sorted(logs.items()):
        for block in log["blocks"]:
            sims = block["similarities"]
            for row, frames in enumerate(block["selected_frames"]):
                for k, frame in enumerate(frames):
                    events.append({"stem": stem, "query_frame": block["query_frame"], "frame": frame,
                                   "age": block["query_frame"] - frame,
                                   "similarity": None if sims is None else sims[row][k]})
    return events


def age_histogram(events: list[dict]) -> dict[str, list[int]]:
    """Counts of retrieval ages (latent frames) in bins of AGE_BIN_FRAMES: {"edges": [...], "counts": [...]}."""
    if not events:
        return {"edges": [], "counts": []}
    top = max(e["age"] for e in events)
    edges = list(range(0, top + AGE_BIN_FRAMES + 1, AGE_BIN_FRAMES))
    counts = [0] * (len(edges) - 1)
    for e in events:
        counts[e["age"] // AGE_BIN_FRAMES] += 1
    return {"edges": edges, "counts": counts}


def reuse(events: list[dict]) -> dict:
    """How often the same (video, frame) is retrieved: {times retrieved: number of frames}, and summaries."""
    per_frame = Counter((e["stem"], e["frame"]) for e in events)
    distribution = Counter(per_frame.values())
    return {"times_retrieved": {str(k): distribution[k] for k in sorted(distribution)},
            "distinct_frames": len(per_frame), "retrievals": len(events),
            "mean_times_retrieved": fmean(per_frame.values()) if per_frame else None,
            "max_times_retrieved": max(per_frame.values(), default=None)}


def similarity_over_time(events: list[dict]) -> dict[str, list]:
    """Mean similarity of the retrieved frames per query frame (over videos and the K retrieved)."""
    by_query: dict[int, list[float]] = defaultdict(list)
    for e in events:
        if e["similarity"] is not None:
            by_query[e["query_frame"]].append(e["similarity"])
    queries = sorted(by_query)
    return {"query_frame": queries, "mean_similarity": [fmean(by_query[q]) for q in queries]}


def retrieval_diagnostics(run: RunInfo) -> dict | None:
    """Diagnostics of a run, None if it has no retrieval logs."""
    logs = read_logs(run)
    if not logs:
        return None
    events = retrieval_events(logs)
    ages = [e["age"] for e in events]
    return {"run_id": run.run_id, "videos": len(logs), "age_histogram": age_histogram(events),
            "mean_age_frames": fmean(ages) if ages else None, "reuse": reuse(events),
            "similarity_over_time": similarity_over_time(events)}
