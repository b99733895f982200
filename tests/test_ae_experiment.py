"""The descriptor experiment (ae/experiment.py): the README shows the table the script wrote, and the
script reproduces its table (a rerun that retrains one run gives the same bytes)."""
import shutil
from pathlib import Path

import pytest

from ae.experiment import LABELS, REGIMES, ROWS, main

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "ae_experiment"
MARK = "<!-- ae.experiment table (docs/ae_experiment/table.md) -->"


def test_readme_shows_the_committed_experiment_table_and_small_figures():
    table = (DOCS / "table.md").read_text()
    readme = (ROOT / "README.md").read_text()
    assert readme.count(MARK) == 2, "the README marks the table's start and end with the same comment"
    assert readme.split(MARK)[1].strip() == table.strip()
    for name in ROWS:
        assert f"| {LABELS[name]} |" in table
        png = DOCS / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 200_000
    assert all(f"**{regime}**" in table for regime in REGIMES)


@pytest.mark.slow
def test_tiny_experiment_reproduces_its_table_after_a_run_is_redone(tmp_path):
    args = ["--tiny", "--out", str(tmp_path / "run"), "--table", str(tmp_path / "table.md"), "--figures", str(tmp_path / "fig"), "--seeds", "0", "--jobs", "1"]
    main(args)
    first = (tmp_path / "table.md").read_text()
    for name in ROWS:
        assert f"| {LABELS[name]} |" in first
        assert (tmp_path / "fig" / f"{name}.png").is_file()
    shutil.rmtree(tmp_path / "run" / "runs" / "cuts" / "full")  # train this variant again from scratch
    (tmp_path / "table.md").unlink()
    main(args)
    assert (tmp_path / "table.md").read_text() == first
