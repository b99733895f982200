"""inference.sh / inference.py end to end on the random-weight demo backbone, through the real scripts."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio.v2 as imageio
import pytest
import torch

from utils.locks import hold_folder
from utils.video_io import read_video

REPO = Path(__file__).resolve().parents[1]
DEMO_FRAMES = 24  # 8 blocks: retrieval runs at blocks starting at frames 18 and 21
PROMPTS = "prompts=[a red fox in snow,a paper boat in the rain,a lighthouse at night]"


def run(cmd: list[str], env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})},
                            timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def stems(folder: Path) -> list[str]:
    return sorted(p.name.removesuffix(".json") for p in folder.glob("[0-9]*-[0-9].json"))


def check_recency_guard(blocks: list[dict], k: int, r: int, sink: int) -> None:
    """Every retrieved frame is an eligible bank entry: banked, outside the R newest, at most K, no repeats."""
    decisions = [b["retrieval"] for b in blocks if b["retrieval"] is not None]
    assert decisions, "a 24-frame latentmem demo retrieves in its last blocks"
    for block in decisions:
        assert block["num_eligible"] == block["num_banked"] - r
        (frames,), (similarities,) = block["selected_frames"], block["similarities"]
        assert len(frames) == min(k, block["num_eligible"]) == len(set(frames))
        assert all(sink <= f < sink + block["num_eligible"] for f in frames)
        assert all(f < block["query_frame"] for f in frames)
        assert similarities == sorted(similarities, reverse=True)


def check_context_log(log: dict, method: str, num_frames: int) -> None:
    """One entry per block; the attended keys (plus the block) never exceed the window's tokens."""
    blocks = log["blocks"]
    assert log["method"] == method and [b["first_frame"] for b in blocks] == list(range(0, num_frames, 3))
    tokens_per_frame = 16
    for block in blocks:
        attended = sum(tokens for _, _, tokens in block["keys"]) + tokens_per_frame * len(block["queries"])
        assert attended <= log["window"] * tokens_per_frame
        assert all(frame is None or frame < block["first_frame"] for frame, _, _ in block["keys"])


@pytest.mark.parametrize("method", ["native", "latentmem", "infrope", "deepforcing"])
def test_demo_end_to_end(method, tmp_path):
    out = tmp_path / method
    result = run(["bash", "inference.sh", "demo", method, f"output_folder={out}", f"num_output_frames={DEMO_FRAMES}"])
    assert "RANDOM-WEIGHT DEMO" in result.stdout
    assert stems(out) == ["0000-0", "0001-0"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["label"].startswith("RANDOM-WEIGHT DEMO")
    assert summary["num_generated"] == 2 and summary["world_size"] == 1 and summary["dtype"] == "float32"
    assert summary["config"]["method"] == method
    mk = summary["config"]["model_kwargs"]
    for stem in ("0000-0", "0001-0"):
        frames = read_video(out / f"{stem}.mp4")
        assert frames.shape == (1 + 4 * (DEMO_FRAMES - 1), 64, 64, 3)
        assert frames.std() > 1  # not a blank video
        latents = torch.load(out / f"{stem}.latents.pt", weights_only=True)
        assert latents.shape == (DEMO_FRAMES, 16, 8, 8) and torch.isfinite(latents).all()
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["num_video_frames"] == frames.shape[0]
        assert len(record["ms_per_block"]) == DEMO_FRAMES // 3
        assert record["files"] == [f"{stem}.mp4", f"{stem}.latents.pt", f"{stem}.context.json", f"{stem}.context.png", f"{stem}.json"]
        log = json.loads((out / f"{stem}.context.json").read_text())
        check_context_log(log, method, DEMO_FRAMES)
        assert imageio.imread(out / f"{stem}.context.png").ndim == 3
        if method == "latentmem":
            check_recency_guard(log["blocks"], mk["memory_size"], mk["recent_exclude"], mk["sink_size"])
    if method == "infrope":  # the first demo prompt has scenes of 4 blocks: the cache is flushed before block 4
        log = json.loads((out / "0000-0.context.json").read_text())
        assert [b["flush"] for b in log["blocks"]] == [i == 4 for i in range(DEMO_FRAMES // 3)]
        assert [b["scene"] for b in log["blocks"]] == [0] * 4 + [1] * 4
    if method == "deepforcing":  # compressed from block 4 on: some frames are attended only in part
        log = json.loads((out / "0000-0.context.json").read_text())
        assert any(tokens < 16 for b in log["blocks"][4:] for _, _, tokens in b["keys"])
    assert not list(out.glob(".*tmp*"))


# 4 blocks; a 6-frame window (sink 1 + 2 retrieved + current block) makes the last block retrieve
REDUCED_FRAMES = 12
SMALL_WINDOW = ["model_kwargs.local_attn_size=6", "model_kwargs.memory_size=2", "model_kwargs.recent_exclude=1"]


@pytest.mark.slow
@pytest.mark.parametrize("method, dtype, memory_dtype", [("native", "bfloat16", "auto"), ("latentmem", "bfloat16", "float16"),
                                                         ("native", "float16", "auto"), ("latentmem", "float16", "bfloat16")])
def test_demo_end_to_end_in_reduced_precision(method, dtype, memory_dtype, tmp_path):
    """Issue 19: reduced precision crashed at the first call (affine LayerNorm, float32 input, bf16 weights)."""
    run([sys.executable, "inference.py", "--config", f"configs/demo_{method}.yaml", f"output_folder={tmp_path}", f"dtype={dtype}",
         f"model_kwargs.memory_dtype={memory_dtype}", f"num_output_frames={REDUCED_FRAMES}", "prompts=[a red fox in snow]"]
        + (SMALL_WINDOW if method == "latentmem" else []))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["dtype"] == dtype and summary["num_generated"] == 1
    frames = read_video(tmp_path / "0000-0.mp4")
    assert frames.shape == (1 + 4 * (REDUCED_FRAMES - 1), 64, 64, 3) and frames.std() > 1
    latents = torch.load(tmp_path / "0000-0.latents.pt", weights_only=True)
    assert latents.shape == (REDUCED_FRAMES, 16, 8, 8) and torch.isfinite(latents).all() and latents.std() > 0.1
    if method == "latentmem":
        log = json.loads((tmp_path / "0000-0.context.json").read_text())
        check_recency_guard(log["blocks"], k=2, r=1, sink=1)  # SMALL_WINDOW; the demo's sink is 1


def test_two_torchrun_processes_write_each_video_once_and_match_one_process(tmp_path):
    args = ["bash", "inference.sh", "demo", "latentmem", "num_output_frames=21", "save_latents=true", PROMPTS]
    run(args + [f"output_folder={tmp_path / 'one'}"], env={"NPROC": "1"})
    run(args + [f"output_folder={tmp_path / 'two'}"], env={"NPROC": "2"})
    expected = ["0000-0", "0001-0", "0002-0"]
    one, two = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("one", "two"))
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert [v["stem"] for v in two["videos"]] == expected == [v["stem"] for v in one["videos"]]
    assert two["num_generated"] == 3
    assert sorted(os.listdir(tmp_path / "one")) == sorted(os.listdir(tmp_path / "two"))
    for stem in expected:
        a = torch.load(tmp_path / "one" / f"{stem}.latents.pt", weights_only=True)
        b = torch.load(tmp_path / "two" / f"{stem}.latents.pt", weights_only=True)
        assert torch.allclose(a, b, atol=1e-5), stem
        logs = [json.loads((tmp_path / name / f"{stem}.context.json").read_text()) for name in ("one", "two")]
        assert [b["keys"] for b in logs[0]["blocks"]] == [b["keys"] for b in logs[1]["blocks"]]
    # different prompts get different noise
    first = torch.load(tmp_path / "one" / "0000-0.latents.pt", weights_only=True)
    second = torch.load(tmp_path / "one" / "0001-0.latents.pt", weights_only=True)
    assert (first - second).abs().max() > 0.1


def test_skip_existing_resumes_an_interrupted_run(tmp_path):
    prompts = "prompts=[p zero,p one,p two,p three]"
    cmd = [sys.executable, "inference.py", "--config", "configs/demo_native.yaml", f"output_folder={tmp_path}",
           "num_output_frames=12", "skip_existing=true", prompts]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not (tmp_path / "0000-0.json").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first video finished"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = stems(tmp_path)
    assert "0000-0" in finished and len(finished) < 4, finished
    for mp4 in tmp_path.glob("[0-9]*.mp4"):  # anything under a final name is complete
        assert read_video(mp4).shape[0] == 1 + 4 * 11
    first_record_time = (tmp_path / "0000-0.json").stat().st_mtime_ns

    run(cmd)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["num_skipped"] == len(finished) and summary["num_generated"] == 4 - len(finished)
    assert stems(tmp_path) == ["0000-0", "0001-0", "0002-0", "0003-0"]
    assert (tmp_path / "0000-0.json").stat().st_mtime_ns == first_record_time
    assert not list(tmp_path.glob(".*tmp*")), "temporaries of the killed attempt are cleaned up"
    assert [v["status"] for v in summary["videos"]] == ["skipped"] * len(finished) + ["generated"] * (4 - len(finished))


def test_script_names_valid_choices(tmp_path):
    help_text = run(["bash", "inference.sh", "--help"]).stdout
    assert "causal_forcing self_forcing longlive demo" in help_text
    bad = run(["bash", "inference.sh", "wan22", "native"], check=False)
    assert bad.returncode == 2 and "unknown backbone 'wan22'" in bad.stderr
    assert "causal_forcing self_forcing longlive demo" in bad.stderr
    bad = run(["bash", "inference.sh", "demo", "rag"], check=False)
    assert bad.returncode == 2 and "unknown method 'rag'; valid methods: native latentmem infrope deepforcing" in bad.stderr
    assert "--config" in run([sys.executable, "inference.py", "--help"]).stdout


def test_real_config_without_weights_names_every_missing_file(tmp_path):
    out = tmp_path / "out"
    result = run([sys.executable, "inference.py", "--config", "configs/longlive_latentmem.yaml",
                  f"output_folder={out}"], check=False)
    assert result.returncode == 2
    for path in ("checkpoints/longlive_base.pt", "checkpoints/longlive_lora.pt", "checkpoints/ae_latent_mem.pt",
                 "Wan2.1_VAE.pth", "models_t5_umt5-xxl-enc-bf16.pth", "python -m utils.download <backbone>"):
        assert path in result.stderr
    assert not out.exists()


def test_bad_override_fails_naming_the_key(tmp_path):
    result = run([sys.executable, "inference.py", "--config", "configs/demo_native.yaml",
                  f"output_folder={tmp_path}", "model_kwargs.memory_sise=4"], check=False)
    assert result.returncode == 2 and "model_kwargs.memory_sise" in result.stderr
    result = run([sys.executable, "inference.py", "--config", "configs/demo_native.yaml", "num_output_frames=20"],
                 check=False)
    assert result.returncode == 2 and "num_output_frames 20" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_second_run_in_a_folder_in_use_refuses_naming_the_holder(tmp_path):
    with hold_folder(tmp_path, "output_folder"):
        result = run([sys.executable, "inference.py", "--config", "configs/demo_native.yaml", f"output_folder={tmp_path}",
                      "num_output_frames=6", "prompts=[a]"], check=False)
    assert result.returncode == 2
    assert f"output_folder '{tmp_path}' is in use by another run (pid {os.getpid()} on" in result.stderr
    assert "Traceback" not in result.stderr and not list(tmp_path.glob("*.mp4"))


@pytest.mark.parametrize("problem", ["file", "under_file"])
def test_output_folder_that_is_a_file_fails_before_loading(tmp_path, problem):
    (tmp_path / "taken").write_text("x")
    folder = tmp_path / "taken" if problem == "file" else tmp_path / "taken" / "videos"
    result = run([sys.executable, "inference.py", "--config", "configs/demo_native.yaml", f"output_folder={folder}",
                  "num_output_frames=6", "prompts=[a]"], check=False)
    assert result.returncode == 2 and result.stderr.startswith(f"error: output_folder '{folder}'")
    assert "not a folder" in result.stderr and "RANDOM-WEIGHT" not in result.stdout  # nothing was prepared


def test_skip_existing_keeps_only_videos_of_the_same_settings(tmp_path):
    base = [sys.executable, "inference.py", "--config", "configs/demo_native.yaml", f"output_folder={tmp_path}",
            "skip_existing=true", "prompts=[p zero,p one]"]
    run(base + ["num_output_frames=6"])
    record = json.loads((tmp_path / "0000-0.json").read_text())
    assert record["settings"]["prompt"] == "p zero" and record["settings"]["num_output_frames"] == 6
    assert record["settings"]["weights"]["generator_ckpt"] is None  # random demo weights

    changed = run(base + ["num_output_frames=12", "seed=5"], check=False)  # reported "0 generated, 2 skipped" before
    assert changed.returncode == 2 and "Traceback" not in changed.stderr
    assert f"output_folder '{tmp_path}' holds video 0000-0 generated with other settings" in changed.stderr
    assert "num_output_frames: 6 -> 12" in changed.stderr and "seed: 0 -> 5" in changed.stderr
    assert "skip_existing=false" in changed.stderr
    other_prompts = run(base[:-1] + ["prompts=[p two,p one]", "num_output_frames=6"], check=False)
    assert other_prompts.returncode == 2 and "prompt: 'p zero' -> 'p two'" in other_prompts.stderr

    again = run(base + ["num_output_frames=6", "save_latents=false"])  # same settings: kept
    assert "0 generated, 2 skipped" in again.stdout
    run(base + ["num_output_frames=12", "seed=5", "skip_existing=false"])
    assert json.loads((tmp_path / "0000-0.json").read_text())["num_latent_frames"] == 12
    assert "2 skipped" in run(base + ["num_output_frames=12", "seed=5"]).stdout


def test_config_error_through_the_launcher_is_one_line_and_exit_2(tmp_path):
    result = run(["bash", "inference.sh", "demo", "native", f"output_folder={tmp_path}", "num_output_frames=20"],
                 env={"NPROC": "1"}, check=False)
    assert result.returncode == 2  # before: 1, with torchrun's ChildFailedError traceback
    assert result.stderr.strip().splitlines() == [
        "error: command-line override 'num_output_frames=20' (on configs/demo_native.yaml): num_output_frames 20 must be "
        "a positive multiple of num_frame_per_block 3"]


@pytest.mark.slow
def test_prompt_schedule_override_writes_a_video_with_two_switches(tmp_path):
    schedule = "a red fox in snow[2s] | an owl at night[2s#] | a hare in a field"  # 2 s = 2 blocks of 3 frames
    run(["bash", "inference.sh", "demo", "latentmem", f"output_folder={tmp_path}", f"num_output_frames={DEMO_FRAMES}",
         f"prompt_schedule={schedule}"])
    assert stems(tmp_path) == ["0000-0"]
    log = json.loads((tmp_path / "0000-0.context.json").read_text())
    assert log["segments"] == ["a red fox in snow", "an owl at night", "a hare in a field"]
    assert [b["scene"] for b in log["blocks"]] == [0, 0, 1, 1, 2, 2, 2, 2]
    switches = log["switches"]
    assert [(s["block"], s["segment"], s["cut"]) for s in switches] == [(2, 1, True), (4, 2, False)]
    # LongLive's window recache: before the 12-frame window is full every cached frame is re-encoded, sink included
    assert switches[0]["recached_frames"] == [0, 1, 2, 3, 4, 5] and switches[0]["sink"] == "rewritten"
    record = json.loads((tmp_path / "0000-0.json").read_text())
    assert record["prompt"] == schedule and record["num_latent_frames"] == DEMO_FRAMES
