"""evaluate.py end to end on synthetic run folders (resume, settings change, report files), run
identification, and the torchrun sharding invariant on the real demo outputs (slow)."""
import json
import os
import subprocess
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

import evaluate
from evaluation.job import check_distinct
from evaluation.run_folder import RunFolderError, read_run, run_identity

REPO = Path(__file__).resolve().parents[1]
REPORT_FILES = ("table2.md", "table2.csv", "drift.csv")


def demo_config(latentmem: bool, frames: int) -> dict:
    return {"model_preset": "demo", "generator_ckpt": None, "lora_ckpt": None, "num_output_frames": frames,
            "latent_height": 8, "latent_width": 8,
            "model_kwargs": {"use_latentmem": latentmem, "ae_ckpt": None, "memory_size": 6, "recent_exclude": 5}}


def make_run(folder: Path, latentmem: bool, stems=("0000-0", "0001-0"), frames=12, seed=0) -> Path:
    """A run folder in inference.py's layout: mp4s, latents, retrieval logs, summary.json."""
    folder.mkdir(parents=True)
    gen = np.random.default_rng(seed)
    for i, stem in enumerate(stems):
        video = np.clip(gen.integers(40, 200, (1, 16, 16, 3)) + np.arange(1 + 4 * (frames - 1))[:, None, None, None],
                        0, 255).astype(np.uint8)
        imageio.mimwrite(folder / f"{stem}.mp4", list(video), fps=16, codec="libx264", quality=8, macro_block_size=1)
        torch.save(torch.randn(frames, 16, 8, 8, generator=torch.Generator().manual_seed(seed * 10 + i)),
                   folder / f"{stem}.latents.pt")
        if latentmem:
            blocks = [{"query_frame": q, "selected_frames": [[1, 2]], "similarities": [[0.9, 0.8]]} for q in (8, 11)]
            (folder / f"{stem}.retrieval.json").write_text(json.dumps({"blocks": blocks}))
    summary = {"label": "RANDOM-WEIGHT DEMO: test", "config": demo_config(latentmem, frames),
               "videos": [{"stem": s} for s in stems]}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


@pytest.fixture
def runs(tmp_path):
    return [make_run(tmp_path / "native", False), make_run(tmp_path / "latentmem", True, seed=1)]


def test_run_identity_from_the_summary_config():
    cfg = lambda **kw: {"model_preset": "wan2.1-t2v-1.3b", "model_kwargs": {"use_latentmem": False}, **kw}
    assert run_identity(cfg(generator_ckpt="checkpoints/self_forcing.pt")) == ("Self-Forcing", "base (native)")
    assert run_identity(cfg(generator_ckpt="checkpoints/longlive_base.pt", lora_ckpt="x.pt",
                            model_kwargs={"use_latentmem": True})) == ("LongLive", "LongLive-RAG")
    assert run_identity(cfg(generator_ckpt="ckpts/causal_forcing.pt", method="infrope")) == ("Causal-Forcing", "∞-RoPE")
    assert run_identity(cfg(generator_ckpt="c/causal_forcing.pt", method="deepforcing"))[1] == "Deep Forcing"
    assert run_identity(cfg(generator_ckpt="c/my_backbone.pt")) == ("my_backbone", "base (native)")
    assert run_identity(demo_config(True, 30)) == ("demo (random weights)", "LongLive-RAG")
    with pytest.raises(RunFolderError, match="method 'rag' is not one of"):
        run_identity(cfg(generator_ckpt="c/self_forcing.pt", method="rag"))


def test_unfinished_or_duplicate_run_folders_are_refused(tmp_path, runs):
    with pytest.raises(RunFolderError, match="no summary.json"):
        read_run(tmp_path)
    (runs[0] / "0001-0.mp4").unlink()
    with pytest.raises(RunFolderError, match=r"mp4 is missing: \['0001-0'\]"):
        read_run(runs[0])
    twin = make_run(tmp_path / "again" / "latentmem", True)
    with pytest.raises(RunFolderError, match="both hold demo"):
        check_distinct([read_run(runs[1]), read_run(twin)])


def test_report_then_resume_without_rescoring_then_rescore_on_new_settings(tmp_path, runs, monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    out = tmp_path / "report"
    args = [str(runs[0]), str(runs[1]), f"output_folder={out}", "device=cpu"]
    assert evaluate.main(args) == 0
    meta = json.loads((out / "evaluation.json").read_text())
    assert len(meta["per_rank"][0]["scored"]) == 4 and meta["settings"]["vbench"]["status"] == "not run"
    table = (out / "table2.md").read_text()
    assert table.count("not run") == 12 and "| base (native) |" in table and "| LongLive-RAG |" in table
    report = (out / "report.md").read_text()
    assert "RANDOM-WEIGHT DEMO" in report and "VBench-Long columns: not run, because:" in report
    assert [p.name for p in (out / "plots").glob("*.png")] == ["drift-demo-random-weights.png"]
    native = json.loads(next((out / "runs").glob("*-native-*/scores.json")).read_text())
    assert [v["stem"] for v in native["videos"]] == ["0000-0", "0001-0"]
    video = native["videos"][0]
    assert video["pixels"]["num_frames"] == 45 and len(video["pixels"]["clips"]) == 2  # 45 frames: 32 + borrowed 32
    assert video["latents"]["latent_mean"]["D_curve"][0] == pytest.approx(1.0)
    assert video["latents"]["ae"]["rate"] == 4.0 and video["vbench"]["status"] == "not run"
    diag = json.loads(next((out / "retrieval").glob("*.json")).read_text())
    assert diag["reuse"]["retrievals"] == 8 and diag["reuse"]["distinct_frames"] == 4

    files = sorted((out / "runs").glob("*/videos/*.json"))
    before = {p: p.stat().st_mtime_ns for p in files}
    snapshot = {name: (out / name).read_text() for name in REPORT_FILES}
    assert evaluate.main(args) == 0
    meta = json.loads((out / "evaluation.json").read_text())
    assert meta["per_rank"][0]["scored"] == [] and len(meta["per_rank"][0]["kept"]) == 4
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert {name: (out / name).read_text() for name in REPORT_FILES} == snapshot

    assert evaluate.main(args + ["drift.vde_chunks=5"]) == 0
    assert len(json.loads((out / "evaluation.json").read_text())["per_rank"][0]["scored"]) == 4


def test_config_errors_name_the_key(tmp_path, runs, capsys):
    assert evaluate.main([str(runs[0]), "vbench.mode=sometimes", f"output_folder={tmp_path}/r"]) == 2
    assert "vbench.mode 'sometimes'" in capsys.readouterr().err
    assert evaluate.main([str(runs[0]), "drift.vde_chunk=3"]) == 2
    assert "vde_chunk" in capsys.readouterr().err


def run(cmd, env=None):
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    assert result.returncode == 0, f"{cmd}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow
def test_demo_runs_scored_by_two_processes_give_each_video_once_and_the_one_process_report(tmp_path):
    videos = tmp_path / "videos"
    for method in ("native", "latentmem"):
        run(["bash", "inference.sh", "demo", method, f"output_folder={videos / method}", "num_output_frames=21"])
    folders = [str(videos / "native"), str(videos / "latentmem")]
    one = run(["bash", "evaluate.sh", *folders, f"output_folder={tmp_path / 'one'}"], {"NPROC": "1"})
    run(["bash", "evaluate.sh", *folders, f"output_folder={tmp_path / 'two'}"], {"NPROC": "2"})
    assert "RANDOM-WEIGHT DEMO" in one.stdout and "VBench-Long: not run" in one.stdout
    meta = json.loads((tmp_path / "two" / "evaluation.json").read_text())
    scored = [key for rank in meta["per_rank"] for key in rank["scored"]]
    assert meta["world_size"] == 2 and all(rank["scored"] for rank in meta["per_rank"])
    assert len(scored) == len(set(scored)) == 4
    for name in (*REPORT_FILES, "report.md"):
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "two" / name).read_text(), name
    for path in (tmp_path / "one" / "runs").glob("*/scores.json"):
        assert path.read_text() == (tmp_path / "two" / path.relative_to(tmp_path / "one")).read_text()
    assert len(list((tmp_path / "two" / "plots").glob("drift-*.png"))) == 1
    assert len(list((tmp_path / "two" / "retrieval").glob("*.png"))) == 1
