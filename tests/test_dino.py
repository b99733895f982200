"""DINO curves with a recording stand-in for the VBench venv's Python: the call, its arguments, the
parsing of the features it writes, the S(Δ) / D(t) of known features, resume, and the "not run" path.
The stand-in decodes the videos and writes f_t = (t + 1) (cos θt, sin θt, 0, ...), whose answers are
known: S(g) = cos θg and D(t) = cos θt. Nothing is scored by DINO here (or anywhere else in the tests)."""
import json
import math
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

import evaluate
from evaluation.config import EvaluateConfig
from evaluation.dino import SCRIPT, DinoRunError, dino_availability, dino_scores, run_dino
from evaluation.dino_extract import parse_args
from evaluation.report import run_curves
from evaluation.vbench_env import MARKER
from test_evaluate import make_run

THETA = 0.25
DIM = 8
STAND_IN = f'''#!{sys.executable}
import json, math, os, sys
from pathlib import Path
import imageio.v2 as imageio
import numpy as np
args = sys.argv[1:]
opt = lambda name: args[args.index(name) + 1]
manifest = json.loads(Path(opt("--manifest")).read_text())
with open(os.environ["STAND_IN_RECORD"], "a") as f:
    f.write(json.dumps({{"argv": args, "manifest": manifest}}) + "\\n")
if os.environ.get("STAND_IN_FAIL"):
    print("RuntimeError: CUDA out of memory"); sys.exit(5)
for name, video in manifest.items():
    if name == os.environ.get("STAND_IN_SKIP"):
        continue
    n = len(range(0, len(imageio.mimread(video, memtest=False)), int(opt("--frame_stride"))))
    t = np.arange(n)
    features = np.zeros((n, {DIM}), np.float32)
    features[:, 0], features[:, 1] = (t + 1) * np.cos({THETA} * t), (t + 1) * np.sin({THETA} * t)
    np.save(Path(opt("--output_dir")) / f"{{name}}.npy", features)
'''


def fake_environment(root: Path, weights: bool = True) -> list[str]:
    """A VBench venv whose python is the stand-in, and a cache with (or without) the DINO entries."""
    python = root / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(STAND_IN)
    python.chmod(0o755)
    (root / "venv" / MARKER).write_text(json.dumps({"vbench": "0.1.5", "torch": "2.5.1"}))
    if weights:
        (root / "cache" / "dino_model" / "facebookresearch_dino_main").mkdir(parents=True)
        (root / "cache" / "dino_model" / "dino_vitbase16_pretrain.pth").write_bytes(b"weights")
    return [f"vbench.venv={root / 'venv'}", f"vbench.cache_dir={root / 'cache'}"]


def config(overrides: list[str]) -> EvaluateConfig:
    cfg = EvaluateConfig(run_folders=["x"])
    cfg.vbench.venv, cfg.vbench.cache_dir = (o.split("=", 1)[1] for o in overrides)
    return cfg


@pytest.fixture
def record(tmp_path, monkeypatch):
    path = tmp_path / "record.jsonl"
    monkeypatch.setenv("STAND_IN_RECORD", str(path))
    return lambda: [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def write_video(path: Path, frames: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    video = np.full((frames, 16, 16, 3), 100, np.uint8) + np.arange(frames, dtype=np.uint8)[:, None, None, None]
    imageio.mimwrite(path, list(video), fps=16, codec="libx264", quality=8, macro_block_size=1)
    return path


def expected_curves(n: int) -> tuple[list[float], list[float]]:
    return [math.cos(THETA * g) for g in range(1, n)], [math.cos(THETA * t) for t in range(n)]


def test_call_arguments_and_known_features_give_known_curves(tmp_path, record):
    call, reason = dino_availability(config(fake_environment(tmp_path)))
    assert reason is None and call.frame_stride == 4
    videos = {"r0-a": write_video(tmp_path / "run" / "a.mp4", 45), "r1-b": write_video(tmp_path / "run" / "b.mp4", 20)}
    features = run_dino(call, videos, tmp_path / "work")
    [calls] = [record()]
    assert len(calls) == 1  # one subprocess (one model load) for the batch
    argv = calls[0]["argv"]
    assert argv[0] == str(SCRIPT) and calls[0]["manifest"] == {k: str(v.resolve()) for k, v in videos.items()}
    cache = tmp_path / "cache" / "dino_model"
    assert argv[argv.index("--code") + 1] == str(cache / "facebookresearch_dino_main")
    assert argv[argv.index("--weights") + 1] == str(cache / "dino_vitbase16_pretrain.pth")
    assert argv[argv.index("--frame_stride") + 1] == "4" and argv[argv.index("--image_size") + 1] == "224"
    parsed = parse_args(argv[1:])  # the real script accepts the command the project builds
    assert (parsed.frame_stride, parsed.image_size, parsed.output_dir) == (4, 224, str(tmp_path / "work" / "features"))
    assert {k: tuple(v.shape) for k, v in features.items()} == {"r0-a": (12, DIM), "r1-b": (5, DIM)}

    scores = dino_scores(features["r0-a"], 45, 16.0, call, [1.0, 5.0])
    s_curve, d_curve = expected_curves(12)
    assert scores["status"] == "scored" and scores["rate"] == 4.0 and scores["frame_stride"] == 4
    assert scores["S_curve"] == pytest.approx(s_curve, abs=1e-4) and scores["D_curve"] == pytest.approx(d_curve, abs=1e-4)
    assert scores["S_at"]["1s"] == pytest.approx(math.cos(4 * THETA)) and scores["S_at"]["5s"] is None  # 12 frames < 5 s
    assert scores["D_end"] == pytest.approx(math.cos(11 * THETA)) and scores["S_mean"] == pytest.approx(np.mean(s_curve))
    with pytest.raises(DinoRunError, match="12 rows for a video of 60 frames; expected 15"):
        dino_scores(features["r0-a"], 60, 16.0, call, [1.0])


def test_a_failing_call_or_missing_features_are_errors(tmp_path, record, monkeypatch):
    call, _ = dino_availability(config(fake_environment(tmp_path)))
    videos = {"r0-a": write_video(tmp_path / "a.mp4", 9), "r0-b": write_video(tmp_path / "b.mp4", 9)}
    monkeypatch.setenv("STAND_IN_SKIP", "r0-b")
    with pytest.raises(DinoRunError, match="no features for video 'r0-b'"):
        run_dino(call, videos, tmp_path / "work")
    monkeypatch.setenv("STAND_IN_FAIL", "1")
    with pytest.raises(DinoRunError, match="exited with 5(.|\n)*CUDA out of memory"):
        run_dino(call, videos, tmp_path / "work")


def test_without_the_venv_or_the_weights_the_reason_says_what_is_missing(tmp_path):
    cfg = config([f"x={tmp_path / 'novenv'}", f"x={tmp_path / 'cache'}"])
    assert dino_availability(cfg) == (None, f"no VBench venv at '{tmp_path / 'novenv'}' (vbench.venv; it is built "
                                            "by the first VBench-Long run, see README 'Evaluation')")
    call, reason = dino_availability(config(fake_environment(tmp_path, weights=False)))
    assert call is None and "DINO weights missing" in reason
    assert str(tmp_path / "cache" / "dino_model" / "dino_vitbase16_pretrain.pth") in reason and "dl.fbaipublicfiles" in reason
    cfg = config(fake_environment(tmp_path / "again"))
    cfg.drift.use_dino = False
    assert dino_availability(cfg) == (None, "disabled (drift.use_dino=false)")


def test_report_has_dino_columns_and_curves_and_resume_does_not_recompute(tmp_path, record, monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    runs = [make_run(tmp_path / "native", False, stems=("0000-0",)),
            make_run(tmp_path / "latentmem", True, stems=("0000-0",), seed=1)]
    out = tmp_path / "report"
    args = [str(runs[0]), str(runs[1]), f"output_folder={out}", "device=cpu",
            "drift.use_ae=false", *fake_environment(tmp_path)]
    assert evaluate.main(args) == 0
    assert len(record()) == 1 and len(record()[0]["manifest"]) == 2  # both runs' videos in one call
    video = json.loads(next((out / "runs").glob("*-native-*/videos/0000-0.json")).read_text())
    s_curve, d_curve = expected_curves(12)  # 45 frames, every 4th
    assert video["settings"]["dino"]["status"] == "scored" and video["dino"]["rate"] == 4.0
    assert video["dino"]["S_curve"] == pytest.approx(s_curve, abs=1e-4)
    assert video["dino"]["D_curve"] == pytest.approx(d_curve, abs=1e-4)
    curves = run_curves([video, video])  # the plot's DINO panels
    assert curves["D_dino"][0] == pytest.approx([t / 4 for t in range(12)]) and curves["D_dino"][1] == pytest.approx(d_curve, abs=1e-4)
    assert curves["S_dino"][0] == pytest.approx([g / 4 for g in range(1, 12)])
    drift = (out / "drift.csv").read_text().splitlines()
    header = drift[0].split(",")
    for row in drift[1:]:
        values = row.split(",")
        assert float(values[header.index("S(1s) DINO")]) == pytest.approx(math.cos(4 * THETA))
        assert float(values[header.index("D(end) DINO")]) == pytest.approx(math.cos(11 * THETA))
    assert "DINO columns: not run" not in (out / "report.md").read_text()

    assert evaluate.main(args) == 0  # resume: finished videos keep their features
    assert len(record()) == 1 and json.loads((out / "evaluation.json").read_text())["per_rank"][0]["scored"] == []

    other = tmp_path / "report-without"
    assert evaluate.main([args[0], f"output_folder={other}", "device=cpu", "drift.use_ae=false",
                          f"vbench.venv={tmp_path / 'novenv'}"]) == 0
    assert len(record()) == 1
    drift = (other / "drift.csv").read_text().splitlines()
    header = drift[0].split(",")
    assert all(row.split(",")[header.index(c)] == "not run" for row in drift[1:] for c in ("S(1s) DINO", "D(end) DINO"))
    report = (other / "report.md").read_text()
    assert "DINO columns: not run, because:" in report and f"no VBench venv at '{tmp_path / 'novenv'}'" in report
    video = json.loads(next((other / "runs").glob("*-native-*/videos/0000-0.json")).read_text())
    assert video["dino"]["status"] == "not run" and video["dino"]["reason"].startswith("no VBench venv")
