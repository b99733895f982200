"""The report of a set of run folders, built on rank 0 from the per-video score files only (so it is
the same whatever the number of processes that scored them): Table 2 (Markdown + CSV), the drift
table, per-run JSONs, drift plots per backbone and retrieval diagnostics."""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from statistics import fmean

from evaluation.config import EvaluateConfig
from evaluation.job import RUNS_DIR, score_path
from evaluation.plots import plot_drift, plot_retrieval_diagnostics
from evaluation.retrieval_stats import retrieval_diagnostics
from evaluation.run_folder import VIDEO_FRAMES_PER_LATENT, RunInfo
from evaluation.table import NOT_RUN, TableRow, csv_text, markdown, rank_rows, row_order
from utils.atomic import atomic_write_text

# (column, path into a video record) of the weight-free summary table
DRIFT_COLUMNS = (
    ("S(1s) latent", ("latents", "latent_mean", "S_at", "1s")),
    ("S mean latent", ("latents", "latent_mean", "S_mean")),
    ("D(end) latent", ("latents", "latent_mean", "D_end")),
    ("S(1s) AE", ("latents", "ae", "S_at", "1s")),
    ("D(end) AE", ("latents", "ae", "D_end")),
    ("S(1s) DINO", ("dino", "S_at", "1s")),
    ("D(end) DINO", ("dino", "D_end")),
    ("ΔE last s", ("pixels", "final_drift", "delta_e")),
    ("ΔY last s", ("pixels", "final_drift", "luminance_drift")),
    ("sharp. ratio last s", ("pixels", "final_drift", "sharpness_ratio")),
    ("VDE clarity", ("pixels", "vde", "clarity")),
    ("VDE motion", ("pixels", "vde", "motion_framediff")),
    ("first-vs-last sharp.", ("pixels", "first_vs_last", "sharpness")),
    ("first-vs-last Y", ("pixels", "first_vs_last", "luminance")),
)


DINO_COLUMNS = ("S(1s) DINO", "D(end) DINO")
# (curve key suffix, path of a video record's S(Δ) / D(t) summary)
SIMILARITY_FEATURES = (("latent_mean", ("latents", "latent_mean")), ("ae", ("latents", "ae")), ("dino", ("dino",)))
NOT_RUN_NOTE = f"{NOT_RUN}, because:"


class MissingScoresError(RuntimeError):
    """A video has no score file after scoring (a rank failed); re-run to resume."""


def load_records(cfg: EvaluateConfig, runs: list[RunInfo]) -> dict[str, list[dict]]:
    records = {}
    for run in runs:
        paths = [score_path(cfg.output_folder, run, stem) for stem in run.stems]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise MissingScoresError(f"{len(missing)} videos have no scores, e.g. {missing[0]}; re-run to resume")
        records[run.run_id] = [json.loads(p.read_text()) for p in paths]
    return records


def dig(record: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(record, dict) or key not in record:
            return None
        record = record[key]
    return record


def mean_of(records: list[dict], path: tuple[str, ...]) -> float | None:
    values = [v for v in (dig(r, path) for r in records) if v is not None]
    return fmean(values) if values else None


def vbench_values(records: list[dict]) -> tuple[dict[str, float] | None, str | None, list[str]]:
    """(run means × 100, why not scored, dimensions) from the per-video VBench scores."""
    first = records[0]["vbench"]
    if first["status"] != "scored":
        return None, first["reason"], []
    dims = first["dimensions"]
    return {d: 100 * fmean(r["vbench"]["scores"][d] for r in records) for d in dims}, None, dims


def mean_curve(curves: list[list[float]]) -> list[float]:
    """Mean over videos, truncated to the shortest video."""
    n = min(len(c) for c in curves)
    return [fmean(c[i] for c in curves) for i in range(n)]


def run_curves(records: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """{key: (x seconds, mean y)} for the drift plots."""
    curves = {}
    hz = records[0]["pixels"]["curve_hz"]
    for name in records[0]["pixels"]["curves"]:
        per_video = [r["pixels"]["curves"][name] for r in records if name in r["pixels"]["curves"]]
        y = mean_curve(per_video)
        curves[name] = ([i / hz for i in range(len(y))], y)
    for feature, path in SIMILARITY_FEATURES:
        sims = [dig(r, path) for r in records]
        if any(s is None or "S_curve" not in s for s in sims):
            continue
        rate = sims[0]["rate"]
        d, s = mean_curve([x["D_curve"] for x in sims]), mean_curve([x["S_curve"] for x in sims])
        curves[f"D_{feature}"] = ([i / rate for i in range(len(d))], d)
        curves[f"S_{feature}"] = ([(i + 1) / rate for i in range(len(s))], s)
    return curves


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def _fmt(value: float | str | None) -> str:
    """A mean, "—" where no video has the value, or NOT_RUN."""
    return "—" if value is None else value if isinstance(value, str) else f"{value:.4g}"


def drift_table(rows: list[tuple[RunInfo, dict]]) -> tuple[str, str]:
    """(Markdown, CSV) of the weight-free summaries, one row per run."""
    names = [c for c, _ in DRIFT_COLUMNS]
    md = ["| Length | Backbone | Method | " + " | ".join(names) + " |", "|---|---|---|" + "---:|" * len(names)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["length", "backbone", "method", *names])
    for run, means in rows:
        md.append(f"| {run.length} | {run.backbone} | {run.method} | " + " | ".join(_fmt(means[c]) for c in names) + " |")
        writer.writerow([run.length, run.backbone, run.method,
                         *("" if means[c] is None else means[c] if isinstance(means[c], str) else repr(means[c])
                           for c in names)])
    return "\n".join(md) + "\n", out.getvalue()


def write_report(cfg: EvaluateConfig, runs: list[RunInfo], scoring: dict) -> Path:
    out = Path(cfg.output_folder)
    runs = sorted(runs, key=lambda r: row_order(r.seconds, r.backbone, r.method))
    records = load_records(cfg, runs)
    table_rows, drift_rows, reasons, dino_reasons, plot_runs, retrieval_md = [], [], set(), set(), {}, []
    for run in runs:
        recs = records[run.run_id]
        values, reason, _ = vbench_values(recs)
        if reason:
            reasons.add(reason)
        table_rows.append(TableRow(run.length, run.seconds, run.backbone, run.method, values))
        means = {column: mean_of(recs, path) for column, path in DRIFT_COLUMNS}
        dino = recs[0]["dino"]  # every record of a report has the same DINO settings
        if dino["status"] != "scored":
            dino_reasons.add(dino["reason"])
            means.update({column: NOT_RUN for column in DINO_COLUMNS})
        drift_rows.append((run, means))
        plot_runs.setdefault(run.backbone, []).append((f"{run.method}, {run.length}", run_curves(recs)))
        diag = retrieval_diagnostics(run)
        if diag is not None:
            atomic_write_text(json.dumps(diag, indent=1), out / "retrieval" / f"{run.run_id}.json")
            seconds_per_frame = VIDEO_FRAMES_PER_LATENT / run.fps
            png = out / "retrieval" / f"{run.run_id}.png"
            plot_retrieval_diagnostics(diag, f"{run.backbone} / {run.method} / {run.length}: retrievals",
                                       png, seconds_per_frame, cfg.plot_dpi)
            reuse = diag["reuse"]
            retrieval_md.append(f"- {run.backbone} / {run.method} / {run.length}: {reuse['retrievals']} retrievals of "
                                f"{reuse['distinct_frames']} distinct frames (each retrieved {reuse['mean_times_retrieved']:.2f}× "
                                f"on average, at most {reuse['max_times_retrieved']}×), mean age "
                                f"{diag['mean_age_frames'] * seconds_per_frame:.2f} s: "
                                f"[{png.name}](retrieval/{png.name}), [{png.stem}.json](retrieval/{png.stem}.json)")
        per_run = {"run": {"folder": str(run.folder), "run_id": run.run_id, "backbone": run.backbone,
                           "method": run.method, "length": run.length, "label": run.label},
                   "vbench_means_x100": values, "vbench_reason": reason, "drift_means": means, "videos": recs}
        atomic_write_text(json.dumps(per_run, indent=1), out / RUNS_DIR / run.run_id / "scores.json")
    rows = rank_rows(table_rows)
    atomic_write_text(markdown(rows), out / "table2.md")
    atomic_write_text(csv_text(rows), out / "table2.csv")
    drift_md, drift_csv = drift_table(drift_rows)
    atomic_write_text(drift_csv, out / "drift.csv")
    plot_md = []
    for backbone, lines in plot_runs.items():
        png = out / "plots" / f"drift-{slug(backbone)}.png"
        label = " (RANDOM-WEIGHT output)" if any(r.label for r in runs if r.backbone == backbone) else ""
        plot_drift(f"{backbone}: drift over time, mean over each run's videos{label}", lines, png, cfg.plot_dpi)
        plot_md.append(f"- {backbone}: [plots/{png.name}](plots/{png.name})")
    text = report_markdown(runs, rows, reasons, dino_reasons, drift_md, plot_md, retrieval_md, scoring)
    path = out / "report.md"
    atomic_write_text(text, path)
    return path


def report_markdown(runs, rows, reasons, dino_reasons, drift_md, plot_md, retrieval_md, scoring) -> str:
    labels = sorted({r.label for r in runs if r.label})
    parts = ["# Evaluation report", ""]
    parts += [f"**{label}**" for label in labels] + ([""] if labels else [])
    parts += ["Runs: " + ", ".join(f"`{r.folder}` ({r.backbone} / {r.method} / {r.length}, {len(r.stems)} videos)"
                                   for r in runs), "", "## Table 2 (VBench-Long × 100)", "", markdown(rows)]
    if reasons:
        parts += ["VBench-Long columns: " + NOT_RUN_NOTE, ""] + [f"```\n{reason}\n```" for reason in sorted(reasons)] + [""]
    parts += ["## Drift (weight-free except DINO; means over videos)", "", drift_md]
    if dino_reasons:
        parts += ["DINO columns: " + NOT_RUN_NOTE, ""] + [f"```\n{reason}\n```" for reason in sorted(dino_reasons)] + [""]
    parts += ["S(Δ): mean cosine similarity of features Δ apart; D(end): cosine of the last to the first feature "
              "(latent frame, or DINO ViT-B/16 CLS feature of a frame from the VBench environment); ΔE / ΔY / sharpness ratio: mean over the last second against the first second; VDE: Video "
              "Drift Error over 10 chunks (lower = less drift); first-vs-last: |first 5 s − last 5 s|.", "",
              "## Drift plots", ""] + plot_md + [""]
    parts += ["## Retrieval diagnostics", ""] + (retrieval_md or ["No run has retrieval logs."]) + [""]
    settings = scoring["settings"]
    parts += ["## Provenance", "", f"- project commit: {scoring['project_commit']}",
              f"- VBench-Long: {provenance(settings['vbench'])}",
              f"- retrieval AE for the embedding curves: {json.dumps(settings['ae'])}",
              f"- DINO curves: {provenance(settings['dino'])}",
              f"- drift settings: {json.dumps(settings['drift'])}", ""]
    return "\n".join(parts)


def provenance(status: dict) -> str:
    """The settings of VBench-Long or of the DINO curves (their reason for not running is given above)."""
    if status["status"] != "scored":
        return "not run (reason above)"
    return json.dumps(status)
