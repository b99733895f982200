import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from utils.config import ConfigError
from utils.locks import RUN_LOCK_FILE, FolderInUseError, check_writable_folder, hold_folder

REPO = Path(__file__).resolve().parents[1]


def test_second_holder_is_refused_naming_the_first(tmp_path):
    with hold_folder(tmp_path / "out", "output_folder"):
        holder = json.loads((tmp_path / "out" / RUN_LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(FolderInUseError) as err:
            with hold_folder(tmp_path / "out", "output_folder"):
                pass
        message = str(err.value)
        assert f"pid {os.getpid()} on {socket.gethostname()}" in message and holder["started"] in message
        assert holder["command"] in message and "output_folder" in message
    with hold_folder(tmp_path / "out", "output_folder"):  # released at the end of the first run
        (tmp_path / "out" / "video.mp4").write_text("x")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["video.mp4"]  # no lock file left behind


def test_lock_held_by_another_process_is_refused(tmp_path):
    code = ("import sys, time; from utils.locks import hold_folder\n"
            f"with hold_folder({str(tmp_path)!r}, 'output_folder'):\n    print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(FolderInUseError, match=f"pid {proc.pid} on"):
            with hold_folder(tmp_path, "output_folder"):
                pass
    finally:
        proc.kill()
        proc.wait()
    with hold_folder(tmp_path, "output_folder"):  # the kernel released the killed holder's lock
        pass


def test_stale_lock_of_a_dead_run_is_taken_over(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = {"pid": dead.pid, "host": socket.gethostname(), "started": "yesterday", "command": "python inference.py"}
    (tmp_path / RUN_LOCK_FILE).write_text(json.dumps(stale))
    with hold_folder(tmp_path, "output_folder"):
        assert json.loads((tmp_path / RUN_LOCK_FILE).read_text())["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert "stale lock" in err and f"pid {dead.pid}" in err


def test_folder_that_is_a_file_or_read_only_is_refused_without_creating_it(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="output_folder '.*file' is a file"):
        check_writable_folder(tmp_path / "file", "output_folder")
    with pytest.raises(ConfigError, match="lies under the file"):
        check_writable_folder(tmp_path / "file" / "sub", "output_folder")
    check_writable_folder(tmp_path / "a" / "b", "output_folder")
    assert not (tmp_path / "a").exists()


def test_read_only_parent_is_refused(tmp_path, monkeypatch):
    # the tests may run as root, for whom permission bits do not apply: the access check is stood in for
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(ConfigError, match="not writable .*nearest existing parent .* is read-only"):
        check_writable_folder(tmp_path / "new", "output_folder")

