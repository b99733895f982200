"""The VBench-Long call with a recording stand-in for eval_long.py: command, arguments, staging and
result parsing (the stand-in only records and answers in VBench's result format; nothing is scored)."""
import json
import sys
from pathlib import Path

import pytest

from evaluation.config import VBENCH_DIMENSIONS, VBenchConfig
from evaluation.vbench_runner import VBenchCall, VBenchRunError, parse_results, run_call

STAND_IN = r'''
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
record = {"argv": args, "cwd": os.getcwd(), "cache": os.environ.get("VBENCH_CACHE_DIR"),
          "videos": sorted(os.listdir(args[args.index("--videos_path") + 1]))}
Path(os.environ["STAND_IN_RECORD"]).write_text(json.dumps(record))
if os.environ.get("STAND_IN_FAIL"):
    print("CUDA error: no kernel image"); sys.exit(3)
videos_path = args[args.index("--videos_path") + 1]
dims = args[args.index("--dimension") + 1:args.index("--output_path")]
results = {}
for d, dim in enumerate(dims):
    scale = 100.0 if dim == "imaging_quality" else 1.0
    clips, videos = [], []
    for v, name in enumerate(sorted(os.listdir(videos_path))):
        stem = name[:-4]
        scores = [scale * (0.1 * d + 0.01 * v + 0.001 * c) for c in range(2)]
        clips += [{"video_path": f"{videos_path}/split_clip/{stem}/{stem}_{c:03d}.mp4", "video_results": s}
                  for c, s in enumerate(scores)]
        videos.append({"video_path": f"{videos_path}/{stem}.mp4", "video_results": sum(scores) / 2})
    consistency = dim in ("subject_consistency", "background_consistency")
    results[dim] = [0.0, videos] if consistency else [0.0, clips, videos]
out = Path(args[args.index("--output_path") + 1]) / "results_2026-12-01-12:00:00_eval_results.json"
out.write_text(json.dumps(results))
'''


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    repo = tmp_path / "VBench"
    (repo / "vbench2_beta_long").mkdir(parents=True)
    (repo / "vbench2_beta_long" / "eval_long.py").write_text(STAND_IN)
    monkeypatch.setenv("STAND_IN_RECORD", str(tmp_path / "record.json"))
    cfg = VBenchConfig(repo=str(repo), cache_dir=str(tmp_path / "cache"))
    return VBenchCall(Path(sys.executable), cfg), tmp_path


def make_videos(folder: Path, names: list[str]) -> dict[str, Path]:
    folder.mkdir()
    for name in names:
        (folder / f"{name}.mp4").write_bytes(b"not decoded by the stand-in")
    return {f"r0-{name}": folder / f"{name}.mp4" for name in names}


def test_call_passes_the_protocol_arguments_and_parses_per_video_and_per_clip_scores(stand_in):
    call, tmp = stand_in
    videos = make_videos(tmp / "run", ["0000-0", "0001-0"])
    parsed = run_call(call, videos, tmp / "work")
    record = json.loads((tmp / "record.json").read_text())
    argv = record["argv"]
    assert argv[argv.index("--mode") + 1] == "long_custom_input" and "--dev_flag" in argv
    assert argv[argv.index("--dimension") + 1:argv.index("--output_path")] == list(VBENCH_DIMENSIONS)
    assert Path(argv[argv.index("--videos_path") + 1]) == tmp / "work" / "videos"
    assert record["cwd"] == str((tmp / "VBench").resolve()) and record["cache"] == str(tmp / "cache")
    assert record["videos"] == ["r0-0000-0.mp4", "r0-0001-0.mp4"]
    assert (tmp / "work" / "videos" / "r0-0001-0.mp4").resolve() == (tmp / "run" / "0001-0.mp4").resolve()
    assert sorted(parsed) == ["r0-0000-0", "r0-0001-0"]
    for v, name in enumerate(sorted(parsed)):
        for d, dim in enumerate(VBENCH_DIMENSIONS):
            expected_clips = [0.1 * d + 0.01 * v + 0.001 * c for c in range(2)]  # imaging: 0-100 scale / 100
            assert parsed[name]["scores"][dim] == pytest.approx(sum(expected_clips) / 2)
            if dim in ("subject_consistency", "background_consistency"):
                assert dim not in parsed[name]["clips"]  # VBench reports only fused per-video scores for these
            else:
                assert parsed[name]["clips"][dim] == pytest.approx(expected_clips)


def test_without_dev_flag_and_with_fewer_dimensions(stand_in):
    call, tmp = stand_in
    call = VBenchCall(call.python, VBenchConfig(repo=call.cfg.repo, dev_flag=False, dimensions=["dynamic_degree"]))
    parsed = run_call(call, make_videos(tmp / "run", ["0000-0"]), tmp / "work")
    argv = json.loads((tmp / "record.json").read_text())["argv"]
    assert "--dev_flag" not in argv and argv[argv.index("--dimension") + 1] == "dynamic_degree"
    assert list(parsed["r0-0000-0"]["scores"]) == ["dynamic_degree"]
    assert call.options()["dev_flag"] is False


def test_a_failing_call_reports_its_log(stand_in, monkeypatch):
    call, tmp = stand_in
    monkeypatch.setenv("STAND_IN_FAIL", "1")
    with pytest.raises(VBenchRunError, match="exited with 3(.|\n)*no kernel image"):
        run_call(call, make_videos(tmp / "run", ["0000-0"]), tmp / "work")


def test_results_missing_a_video_are_an_error(tmp_path):
    (tmp_path / "x_eval_results.json").write_text(json.dumps(
        {"dynamic_degree": [0.5, [], [{"video_path": "/v/r0-0000-0.mp4", "video_results": 1.0}]]}))
    assert parse_results(tmp_path, ["r0-0000-0"], ["dynamic_degree"])["r0-0000-0"]["scores"] == {"dynamic_degree": 1.0}
    with pytest.raises(VBenchRunError, match="no score for video 'r0-0001-0'"):
        parse_results(tmp_path, ["r0-0000-0", "r0-0001-0"], ["dynamic_degree"])
    with pytest.raises(VBenchRunError, match="no results for dimension 'aesthetic_quality'"):
        parse_results(tmp_path, ["r0-0000-0"], ["aesthetic_quality"])
