"""The VBench environment check: every missing part named with where it is expected and how to fetch it;
the pinned install; the venv built once."""
import json
import subprocess

import pytest

from evaluation import vbench_env
from evaluation.config import VBenchConfig
from evaluation.vbench_env import (WEIGHTS, VBenchUnavailable, ensure_venv, install_commands, prepare, problems,
                                   weight_path)


def git_repo(path, with_entry=True) -> str:
    (path / "vbench2_beta_long").mkdir(parents=True)
    if with_entry:
        (path / "vbench2_beta_long" / "eval_long.py").write_text("# checkout\n")
    run = lambda *a: subprocess.run(["git", "-C", str(path), *a], check=True, capture_output=True, text=True).stdout
    run("init", "-q")
    run("add", "-A")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c", "--allow-empty")
    return run("rev-parse", "HEAD").strip()


def fill_cache(cache, dev_flag=True):
    for w in WEIGHTS:
        path = weight_path(w, cache)
        if not str(path).startswith(str(cache)):
            continue  # torch hub entries live outside the cache
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir() if "facebookresearch_dino_main" in w.path else path.write_bytes(b"w")


def test_everything_missing_is_listed_with_paths_and_fetch_commands(tmp_path, monkeypatch):
    monkeypatch.setattr(vbench_env.torch.cuda, "is_available", lambda: False)
    cfg = VBenchConfig(repo=str(tmp_path / "VBench"), cache_dir=str(tmp_path / "cache"))
    found = problems(cfg)
    assert any("no CUDA device" in p for p in found)
    repo = next(p for p in found if "repo checkout" in p)
    assert "git clone https://github.com/Vchitect/VBench.git" in repo and "checkout 45e79ec" in repo
    weights = next(p for p in found if "weights missing" in p)
    for w in WEIGHTS:
        assert str(weight_path(w, tmp_path / "cache")) in weights and w.fetch in weights
    with pytest.raises(VBenchUnavailable, match="cannot run"):
        prepare(cfg, print)


def test_a_complete_checkout_and_cache_leave_only_the_commit_check(tmp_path, monkeypatch):
    monkeypatch.setattr(vbench_env.torch.cuda, "is_available", lambda: True)
    commit = git_repo(tmp_path / "VBench")
    fill_cache(tmp_path / "cache")
    cfg = VBenchConfig(repo=str(tmp_path / "VBench"), cache_dir=str(tmp_path / "cache"), dev_flag=False, commit=commit[:7])
    assert problems(cfg) == []  # without dev_flag DINOv2 (torch hub) is not needed
    wrong = VBenchConfig(repo=cfg.repo, cache_dir=cfg.cache_dir, dev_flag=False, commit="45e79ec")
    (message,) = problems(wrong)
    assert f"at commit {commit}, expected 45e79ec" in message


def test_install_pins_torch_first_then_vbench_and_its_clashing_pins():
    cfg = VBenchConfig(venv="/v")
    venv, _, torch_step, vbench_step = install_commands(cfg)
    assert venv == ["python3.10", "-m", "venv", "--clear", "/v"]
    assert torch_step[-2:] == ["torch==2.5.1", "torchvision==0.20.1"] and cfg.torch_index_url in torch_step
    for pin in ("vbench==0.1.5", "transformers==4.33.2", "tokenizers==0.13.3", "numpy==1.26.4", "timm==1.0.12",
                "pyiqa==0.1.10", "decord==0.6.0", "openai-clip==1.0.1", "dreamsim", "scenedetect[opencv]"):
        assert pin in vbench_step
    assert vbench_step[0] == "/v/bin/python"


def test_a_built_venv_is_not_rebuilt_and_a_failed_build_says_where(tmp_path, monkeypatch):
    cfg = VBenchConfig(venv=str(tmp_path / "venv"), python=str(tmp_path / "no-such-python"))
    with pytest.raises(VBenchUnavailable, match="cannot run .*no-such-python"):
        ensure_venv(cfg, lambda _: None)
    (tmp_path / "venv").mkdir(exist_ok=True)
    (tmp_path / "venv" / vbench_env.MARKER).write_text(json.dumps({"vbench": "0.1.5"}))
    monkeypatch.setattr(vbench_env.subprocess, "run", lambda *a, **k: pytest.fail("rebuilt an installed venv"))
    assert ensure_venv(cfg, lambda _: None) == {"vbench": "0.1.5"}
