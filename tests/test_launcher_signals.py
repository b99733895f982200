"""Killing a launcher (bash inference.sh ...) stops its workers and their ffmpeg children (issue 19)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from utils.parent_death import parent_already_gone

REPO = Path(__file__).resolve().parents[1]


def children() -> dict[int, list[int]]:
    """parent pid -> child pids, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # exited meanwhile
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    tree, found, todo = children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def command(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG are Linux")
@pytest.mark.slow
@pytest.mark.parametrize("sig, wait_for_ffmpeg", [(signal.SIGKILL, True), (signal.SIGTERM, False)])
def test_killing_the_launcher_stops_worker_and_ffmpeg(sig, wait_for_ffmpeg, tmp_path):
    # 600 latent frames: a few seconds of blocks, then ~2400 video frames streamed into ffmpeg
    launcher = subprocess.Popen(["bash", "inference.sh", "demo", "native", f"output_folder={tmp_path}", "num_output_frames=600",
                                 "prompts=[a red fox]"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        target = "ffmpeg" if wait_for_ffmpeg else "inference.py"
        wait_for(lambda: any(target in command(p) for p in descendants(launcher.pid)), 300, target)
        workers = descendants(launcher.pid)
        assert any("inference.py" in command(p) for p in workers)
        os.kill(launcher.pid, sig)
        launcher.wait(timeout=30)
        wait_for(lambda: not any(alive(p) for p in workers), 15, f"workers {[(p, command(p)) for p in workers if alive(p)]} to stop")
    finally:
        for pid in [launcher.pid, *descendants(launcher.pid)]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert not (tmp_path / "0000-0.mp4").exists()  # nothing half-written under the final name


def test_parent_check_detects_an_agent_that_died_first():
    assert not parent_already_gone(os.getppid())
    assert parent_already_gone(os.getppid() + 1)
    assert not parent_already_gone(None)


def test_every_launcher_runs_workers_through_the_parent_death_guard():
    launch = (REPO / "utils/torchrun_launch.sh").read_text()
    assert "-m utils.parent_death" in launch and "exec python -m torch.distributed.run" in launch
    for script in ("inference.sh", "generate_latent.sh", "train_ae_delta.sh"):
        text = (REPO / script).read_text()
        assert "source utils/torchrun_launch.sh" in text and "launch_torchrun " in text, script


def test_worker_gets_sigterm_when_its_parent_dies(tmp_path):
    """The guard without torchrun: a parent starts the worker through utils.parent_death and is SIGKILLed."""
    worker_pid = tmp_path / "worker.pid"
    script = tmp_path / "sleeper.py"
    script.write_text(f"import os, time\nopen({str(worker_pid)!r}, 'w').write(str(os.getpid()))\ntime.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                               f"subprocess.Popen([sys.executable, '-m', 'utils.parent_death', {str(script)!r}]); time.sleep(120)"],
                              cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        pid = int(wait_for(lambda: worker_pid.exists() and worker_pid.read_text(), 60, "the worker"))
        assert "sleeper.py" in command(pid)
        parent.kill()
        parent.wait()
        wait_for(lambda: not alive(pid), 10, "the orphaned worker to stop")
    finally:
        parent.kill()
