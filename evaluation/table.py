"""Table 2 as the paper prints it: rows grouped by length and backbone, the six VBench-Long metrics
× 100 (best **bold**, second <u>underlined</u> inside each block), Avg. Rank from unrounded values."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from evaluation.config import VBENCH_DIMENSIONS
from evaluation.ranking import average_ranks, metric_ranks
from evaluation.run_folder import BACKBONE_ORDER, METHOD_ORDER

HEADERS = {"subject_consistency": "Subject", "background_consistency": "Background",
           "motion_smoothness": "Motion Smooth.", "dynamic_degree": "Dynamic", "aesthetic_quality": "Aesthetic",
           "imaging_quality": "Imaging"}
NOT_RUN = "not run"


@dataclass
class TableRow:
    length: str
    seconds: float
    backbone: str
    method: str
    values: dict[str, float] | None  # metric -> score × 100 (unrounded); None when VBench was not run
    avg_rank: float | None = None
    ranks: dict[str, float] | None = None

    @property
    def block(self) -> tuple[str, str]:
        return self.length, self.backbone


def _order(value: str, order: tuple[str, ...]) -> tuple[int, str]:
    return (order.index(value), value) if value in order else (len(order), value)


def row_order(seconds: float, backbone: str, method: str) -> tuple:
    """The paper's order: length, then backbone, then method (unknown names after the known ones)."""
    return seconds, _order(backbone, BACKBONE_ORDER), _order(method, METHOD_ORDER)



def rank_rows(rows: list[TableRow], metrics=VBENCH_DIMENSIONS) -> list[TableRow]:
    """Fill avg_rank / ranks in every block whose rows all have scores."""
    scored = [r for r in rows if r.values is not None]
    complete = [r for r in scored if all(o.values is not None for o in rows if o.block == r.block)]
    ranks = average_ranks([r.values for r in complete], [r.block for r in complete], metrics)
    for row, rank in zip(complete, ranks):
        row.avg_rank = rank
    for block in {r.block for r in complete}:
        members = [r for r in complete if r.block == block]
        for row, per_metric in zip(members, metric_ranks([r.values for r in members], metrics)):
            row.ranks = per_metric
    return rows


def _cell(row: TableRow, metric: str) -> str:
    if row.values is None:
        return NOT_RUN
    text = f"{row.values[metric]:.2f}"
    rank = row.ranks[metric] if row.ranks else None
    if rank is not None and rank < 2:  # best (a tie for first has a mean rank below 2)
        return f"**{text}**"
    if rank is not None and rank < 3:
        return f"<u>{text}</u>"
    return text


def markdown(rows: list[TableRow], metrics=VBENCH_DIMENSIONS) -> str:
    lines = ["| Length | Backbone | Method | " + " | ".join(HEADERS[m] for m in metrics) + " | Avg. Rank ↓ |",
             "|---|---|---|" + "---:|" * (len(metrics) + 1)]
    for row in rows:
        rank = f"{row.avg_rank:.2f}" if row.avg_rank is not None else "—"
        lines.append(f"| {row.length} | {row.backbone} | {row.method} | "
                     + " | ".join(_cell(row, m) for m in metrics) + f" | {rank} |")
    return "\n".join(lines) + "\n"


def csv_text(rows: list[TableRow], metrics=VBENCH_DIMENSIONS) -> str:
    """Unrounded values; empty cells where VBench was not run."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["length", "backbone", "method", *metrics, "avg_rank"])
    for row in rows:
        values = [repr(row.values[m]) if row.values is not None else "" for m in metrics]
        writer.writerow([row.length, row.backbone, row.method, *values,
                         repr(row.avg_rank) if row.avg_rank is not None else ""])
    return out.getvalue()
