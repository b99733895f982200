"""Table 2's Avg. Rank (SPEC_NEXT §3.1): inside each (backbone × length) block, rank the methods on
every metric (higher is better for all six, dynamic degree included) from unrounded values, ties
sharing their mean rank; a method's Avg. Rank is the mean of its ranks."""
from __future__ import annotations

from collections import defaultdict
from statistics import fmean
from typing import Hashable, Sequence


def mean_ranks(values: Sequence[float]) -> list[float]:
    """Rank 1 = highest value; equal values share the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: -values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def metric_ranks(rows: Sequence[dict[str, float]], metrics: Sequence[str]) -> list[dict[str, float]]:
    """Per row, its rank among `rows` on each metric."""
    per_metric = {m: mean_ranks([row[m] for row in rows]) for m in metrics}
    return [{m: per_metric[m][i] for m in metrics} for i in range(len(rows))]


def average_ranks(rows: Sequence[dict[str, float]], blocks: Sequence[Hashable], metrics: Sequence[str]) -> list[float]:
    """Avg. Rank of every row, ranking only among rows of the same block."""
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, block in enumerate(blocks):
        members[block].append(i)
    result = [0.0] * len(rows)
    for indices in members.values():
        ranks = metric_ranks([rows[i] for i in indices], metrics)
        for i, row_ranks in zip(indices, ranks):
            result[i] = fmean(row_ranks.values())
    return result
