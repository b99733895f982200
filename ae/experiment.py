"""Does the paper's objective give a better retrieval descriptor? The toy experiment (paper Figure 3).

Trains every descriptor variant on both toy regimes (toydatasets/make_toy_latents.py: `cuts` and
`smooth`) with several seeds, scores each best checkpoint with ae/analyze.py on held-out videos of
scenes never seen in training, and writes one table (mean ± std over seeds) and one similarity-map
figure per descriptor (the first evaluation video of each regime, seed 0's model).

Variants (ae/configs/toy_experiment.yaml plus the loss weights below): AE only as the paper words
it (λ_Δ = λ_s = 0) and as the reference configures it (λ_Δ = 0, λ_s = 1), AE + SeqDelta, the full
objective, and the full objective with λ_s = 0.3 and 0.1. Baselines: the perfect scene label (best
possible), the untrained AE, the average-pooled latent (the pipeline's `avg_pool`) and a random
vector per frame.

    python -m ae.experiment [--out runs/ae_experiment] [--jobs 2] [--seeds 0 1 2] [--tiny]

Everything under --out (data, checkpoints, per-run scores) is reused by a rerun, so an interrupted
experiment continues where it stopped. Each training process uses one thread. The last stdout line
is one JSON object (wall time, table path).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import torch
from tqdm import tqdm

from ae.analyze import (
    RetrievalGeometry,
    ToyVideo,
    cosine_similarity_matrix,
    embed_toy_videos,
    embed_video,
    load_latent_video,
    plot_similarity,
    random_embeddings,
    read_toy_videos,
    scene_label_embeddings,
    toy_scores,
)
from ae.collapse import is_collapsed
from ae.model import load_retrieval_autoencoder
from ae.train import AETrainConfig, build_model, train_autoencoder
from pipeline.descriptors import AvgPoolDescriptor
from pipeline.rollout_config import RolloutConfig
from toydatasets.make_toy_latents import regime_config, write_toy_dataset
from utils.atomic import atomic_write_text
from utils.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "ae" / "configs" / "toy_experiment.yaml"
REGIMES = ("cuts", "smooth")


@dataclass(frozen=True)
class Variant:
    label: str
    delta_weight: float  # λ_Δ
    smooth_weight: float  # λ_s


VARIANTS = {  # the trained descriptors, by run-folder name
    "ae_only_paper": Variant("AE only, paper (λ_Δ = λ_s = 0)", 0.0, 0.0),
    "ae_only_reference": Variant("AE only, reference (λ_Δ = 0, λ_s = 1)", 0.0, 1.0),
    "ae_seqdelta": Variant("AE + SeqDelta (λ_s = 0)", 1.0, 0.0),
    "full": Variant("full objective (λ_Δ = λ_s = 1)", 1.0, 1.0),
    "full_smooth_0.3": Variant("full, λ_s = 0.3", 1.0, 0.3),
    "full_smooth_0.1": Variant("full, λ_s = 0.1", 1.0, 0.1),
}
BASELINES = {
    "scene_label": "scene label (best possible)",
    "untrained": "untrained AE",
    "avg_pool": "avg_pool (latent mean)",
    "random": "random vector per frame",
}
ROWS = ("scene_label", *VARIANTS, "untrained", "avg_pool", "random")
LABELS = {**BASELINES, **{name: v.label for name, v in VARIANTS.items()}}
SCORES = ("near_same", "near_cut", "revisit_precision", "revisit_auroc", "mean_cosine")
# training videos use scene bank and video seed 0; evaluation videos other seeds, so other scenes
TRAIN_SEED, EVAL_SEED = 0, 1


@dataclass(frozen=True)
class Scale:
    train_videos: int
    eval_videos: int
    overrides: tuple[str, ...]  # training config overrides


FULL = Scale(train_videos=256, eval_videos=16, overrides=())
# seconds instead of half an hour: the determinism test of the script
TINY = Scale(train_videos=12, eval_videos=3, overrides=("epochs=2", "hidden_dims=[8,16]", "latent_dim=16", "batch_size=8"))


@dataclass(frozen=True)
class Run:
    regime: str
    variant: str
    seed: int
    data_dir: str
    eval_dir: str
    output_dir: str
    overrides: tuple[str, ...]

    def config(self) -> AETrainConfig:
        variant = VARIANTS[self.variant]
        weights = [f"delta_weight={variant.delta_weight}", f"smooth_weight={variant.smooth_weight}"]
        return load_config(AETrainConfig, CONFIG, [f"data_dir={self.data_dir}", f"output_dir={self.output_dir}", f"seed={self.seed}", *weights, *self.overrides])


def geometry() -> RetrievalGeometry:
    return RetrievalGeometry.from_rollout(RolloutConfig())


def make_data(regime: str, split: str, num_videos: int, out: Path) -> Path:
    """Write (or reuse) the toy videos of one regime and split."""
    seed = TRAIN_SEED if split == "train" else EVAL_SEED
    cfg = regime_config(regime, num_videos=num_videos, seed=seed, scene_seed=seed)
    meta = out / "scenes.json"
    if not (meta.is_file() and json.loads(meta.read_text())["config"] == asdict(cfg)):
        write_toy_dataset(cfg, out, progress=False)
    return out


def train_and_score(run: Run) -> dict:
    """Train one variant (or reuse its finished run) and score its best checkpoint on the evaluation videos."""
    out = Path(run.output_dir)
    scores_path = out / "scores.json"
    if scores_path.is_file():
        return json.loads(scores_path.read_text())
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(out / "train.log", "w") as log, contextlib.redirect_stderr(log):
        logging.basicConfig(stream=log, level=logging.INFO, force=True)  # the collapse warnings land in train.log
        result = train_autoencoder(run.config())
    seconds = time.monotonic() - start
    model = load_retrieval_autoencoder(out / "best.pt").eval()
    videos = read_toy_videos(Path(run.eval_dir))
    scores = toy_scores(embed_toy_videos(lambda x: embed_video(model, x), Path(run.eval_dir), videos), videos, geometry())
    scores.update(
        epochs=len(result.history), best_epoch=result.best_epoch,
        collapsed=is_collapsed(result.history[-1]["embedding"]), train_seconds=seconds,
    )
    atomic_write_text(json.dumps(scores, indent=1) + "\n", scores_path)
    return scores


def baseline_scores(regime: str, eval_dir: Path, seeds: list[int], model_cfg: AETrainConfig) -> dict[str, list[dict]]:
    """{baseline row: [scores per seed]}; the scene label and avg_pool do not depend on the seed."""
    videos, geo = read_toy_videos(eval_dir), geometry()
    label = toy_scores(scene_label_embeddings(videos), videos, geo)
    pooled = toy_scores(embed_toy_videos(lambda x: AvgPoolDescriptor()(x[None])[0], eval_dir, videos), videos, geo)
    untrained, rand = [], []
    for seed in seeds:
        cfg = load_config(AETrainConfig, CONFIG, [*model_cfg_overrides(model_cfg), f"seed={seed}"])
        model = build_model(cfg).eval()
        untrained.append(toy_scores(embed_toy_videos(lambda x: embed_video(model, x), eval_dir, videos), videos, geo))
        rand.append(toy_scores(random_embeddings(videos, cfg.latent_dim, seed), videos, geo))
    return {"scene_label": [label] * len(seeds), "untrained": untrained, "avg_pool": [pooled] * len(seeds), "random": rand}


def model_cfg_overrides(cfg: AETrainConfig) -> list[str]:
    return [f"hidden_dims=[{','.join(map(str, cfg.hidden_dims))}]", f"latent_dim={cfg.latent_dim}"]


def mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def regime_table(regime: str, rows: dict[str, list[dict]], num_seeds: int) -> str:
    ref = rows["scene_label"][0]
    lines = [
        f"**{regime}** ({ref['num_videos']} held-out videos of unseen scenes, {ref['num_queries']} revisit queries; "
        f"revisit precision: best possible {ref['revisit_precision_best']:.3f}, chance {ref['revisit_precision_chance']:.3f})",
        "",
        "| descriptor | epochs | collapsed | near-diag. same segment ↑ | near-diag. across cut ↓ | revisit precision ↑ | revisit AUROC ↑ | mean pairwise cos |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ROWS:
        runs = rows[name]
        trained = "epochs" in runs[0]
        epochs = f"{min(r['epochs'] for r in runs)}–{max(r['epochs'] for r in runs)}" if trained else "—"
        collapsed = f"{sum(r['collapsed'] for r in runs)}/{num_seeds}" if trained else "—"
        cells = [mean_std([r[k] for r in runs]) for k in SCORES]
        lines.append(f"| {LABELS[name]} | {epochs} | {collapsed} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_figures(runs: dict[tuple[str, str, int], Run], eval_dirs: dict[str, Path], seeds: list[int], model_cfg: AETrainConfig, out: Path) -> list[Path]:
    """One PNG per descriptor: the similarity maps of the first evaluation video of both regimes."""
    first = {regime: read_toy_videos(eval_dirs[regime])[:1] for regime in REGIMES}
    cfg = load_config(AETrainConfig, CONFIG, [*model_cfg_overrides(model_cfg), f"seed={seeds[0]}"])
    untrained = build_model(cfg).eval()

    def describe(name: str, regime: str, video: ToyVideo) -> torch.Tensor:
        if name == "scene_label":
            return scene_label_embeddings(first[regime])[video.name]
        if name == "random":
            return random_embeddings([video], cfg.latent_dim, seeds[0])[video.name]
        frames = load_latent_video(eval_dirs[regime] / video.name)
        if name == "avg_pool":
            return AvgPoolDescriptor()(frames[None])[0]
        model = untrained if name == "untrained" else load_retrieval_autoencoder(Path(runs[regime, name, seeds[0]].output_dir) / "best.pt").eval()
        return embed_video(model, frames)

    paths = []
    for name in ROWS:
        panels = {f"{regime}: {first[regime][0].name}": cosine_similarity_matrix(describe(name, regime, first[regime][0])) for regime in REGIMES}
        path = out / f"{name}.png"
        plot_similarity(panels, path, LABELS[name], dpi=45)
        paths.append(path)
    return paths


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/ae_experiment"), help="data, checkpoints and per-run scores (default: %(default)s)")
    p.add_argument("--table", type=Path, default=Path("docs/ae_experiment/table.md"), help="markdown table to write (default: %(default)s)")
    p.add_argument("--figures", type=Path, default=Path("docs/ae_experiment"), help="folder of the similarity-map PNGs (default: %(default)s)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=2, help="training processes at once, one thread each (default: %(default)s)")
    p.add_argument("--tiny", action="store_true", help="a seconds-long run of the whole pipeline (tiny data, model and epochs)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    scale = TINY if args.tiny else FULL
    start = time.monotonic()
    data, eval_dirs = args.out / "data", {}
    runs: dict[tuple[str, str, int], Run] = {}
    for regime in REGIMES:
        train_dir = make_data(regime, "train", scale.train_videos, data / regime / "train")
        eval_dirs[regime] = make_data(regime, "eval", scale.eval_videos, data / regime / "eval")
        for variant in VARIANTS:
            for seed in args.seeds:
                output = args.out / "runs" / regime / variant / f"seed{seed}"
                runs[regime, variant, seed] = Run(regime, variant, seed, str(train_dir), str(eval_dirs[regime]), str(output), scale.overrides)
    print(f"data ready after {time.monotonic() - start:.0f} s; {len(runs)} training runs on {args.jobs} processes", file=sys.stderr)

    # runs without the smoothness term train longest (they do not collapse and stop early): start them first
    order = sorted(runs.values(), key=lambda r: (VARIANTS[r.variant].smooth_weight > 0, r.regime, r.variant, r.seed))
    results: dict[tuple[str, str, int], dict] = {}
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(train_and_score, run): run for run in order}
        for future in tqdm(as_completed(futures), total=len(futures), desc="training runs"):
            run = futures[future]
            results[run.regime, run.variant, run.seed] = future.result()

    model_cfg = runs[next(iter(runs))].config()
    tables = []
    for regime in REGIMES:
        rows = baseline_scores(regime, eval_dirs[regime], args.seeds, model_cfg)
        rows.update({v: [results[regime, v, s] for s in args.seeds] for v in VARIANTS})
        tables.append(regime_table(regime, rows, len(args.seeds)))
    table = f"Mean ± std over seeds {args.seeds}.\n\n" + "\n".join(tables)
    atomic_write_text(table, args.table)
    figures = write_figures(runs, eval_dirs, args.seeds, model_cfg, args.figures)
    seconds = time.monotonic() - start
    train_seconds = sum(r["train_seconds"] for r in results.values())
    print(table)
    summary = {"wall_seconds": round(seconds, 1), "train_seconds_summed": round(train_seconds, 1), "jobs": args.jobs,
               "table": str(args.table), "figures": [str(p) for p in figures]}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
