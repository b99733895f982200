"""Table 2 rendering: order, best / second marks, "not run" cells, ranks only in complete blocks."""
import csv
import io

from evaluation.config import VBENCH_DIMENSIONS
from evaluation.table import NOT_RUN, TableRow, csv_text, markdown, rank_rows, row_order


def row(seconds, backbone, method, base):
    values = None if base is None else {m: base + i for i, m in enumerate(VBENCH_DIMENSIONS)}
    return TableRow(f"{seconds}s", seconds, backbone, method, values)


def test_marks_ranks_and_not_run_cells():
    rows = [row(30, "LongLive", "base (native)", 90.0), row(30, "LongLive", "LongLive-RAG", 95.004),
            row(30, "LongLive", "∞-RoPE", 93.0), row(30, "LongLive", "Deep Forcing", 91.0),
            row(60, "Self-Forcing", "base (native)", None), row(60, "Self-Forcing", "LongLive-RAG", 80.0)]
    rows = rank_rows(sorted(rows, key=lambda r: row_order(r.seconds, r.backbone, r.method)))
    assert [r.method for r in rows[:4]] == ["base (native)", "∞-RoPE", "Deep Forcing", "LongLive-RAG"]
    assert [r.avg_rank for r in rows[:4]] == [4.0, 2.0, 3.0, 1.0]
    assert rows[5].avg_rank is None  # its block has a row without scores: no ranking
    text = markdown(rows)
    lines = text.splitlines()
    assert "| 30s | LongLive | LongLive-RAG | **95.00** |" in text and "<u>93.00</u>" in lines[3]
    assert lines[6].count(NOT_RUN) == 6 and lines[6].endswith("| — |")
    table = list(csv.DictReader(io.StringIO(csv_text(rows))))
    assert table[3]["subject_consistency"] == "95.004" and table[4]["avg_rank"] == ""


def test_a_tie_for_first_is_bold_for_both():
    rows = rank_rows([row(30, "X", "base (native)", 90.0), row(30, "X", "LongLive-RAG", 90.0)])
    assert rows[0].avg_rank == rows[1].avg_rank == 1.5
    assert markdown(rows).count("**90.00**") == 2
