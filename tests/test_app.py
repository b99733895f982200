"""app.sh / app.py: the live app's launcher and entry point, through the real scripts."""
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]


def run(cmd: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)


def test_script_names_valid_choices_and_refuses_several_gpus():
    help_text = run(["bash", "app.sh", "--help"]).stdout
    assert "causal_forcing self_forcing longlive demo" in help_text and "PORT=7860" in help_text
    bad = run(["bash", "app.sh", "demo", "rag"])
    assert bad.returncode == 2 and "unknown method 'rag'; valid methods: native latentmem infrope deepforcing" in bad.stderr
    bad = run(["bash", "app.sh", "demo", "native"], env={"GPU": "0,1"})
    assert bad.returncode == 2 and "the live app runs on one: set GPU to one id" in bad.stderr
    entry_help = run([sys.executable, "app.py", "--help"]).stdout
    assert "--port" in entry_help and "--host" in entry_help and "One visitor at a time" in entry_help


def test_a_taken_port_is_refused_before_anything_loads():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run([sys.executable, "app.py", "--config", "configs/demo_latentmem.yaml", "--port", str(port)])
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "PORT=" in result.stderr
    assert "memory plan" not in result.stdout  # refused before the plan, i.e. before loading anything


@pytest.mark.slow
def test_app_sh_serves_the_demo_and_stops_on_sigint(tmp_path):
    port = free_port()
    proc = subprocess.Popen(["bash", "app.sh", "demo", "native", "num_output_frames=6", f"output_folder={tmp_path}"],
                            cwd=REPO, env={**os.environ, "PORT": str(port)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("live app on"):
                break
        assert lines and lines[-1].startswith(f"live app on http://127.0.0.1:{port} (demo, native, cpu"), "".join(lines)
        assert any(line.startswith("RANDOM-WEIGHT DEMO") for line in lines)
        assert any("text encoder" in line and "rollout" in line for line in lines)  # the live plan keeps it loaded
        with connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as ws:
            hello = json.loads(ws.recv(timeout=60))
            assert hello["type"] == "hello" and hello["label"].startswith("RANDOM-WEIGHT DEMO")
            ws.send(json.dumps({"type": "start"}))
            kinds = []
            while "done" not in kinds:
                kinds.append(json.loads(ws.recv(timeout=120))["type"])
        assert kinds == ["started", "block", "block", "done"]
        proc.send_signal(signal.SIGINT)  # the launcher exec'd python: its pid is the server's
        assert proc.wait(timeout=60) == 0
        rest = proc.stdout.read()
        assert rest.strip().endswith("live app stopped") and "Traceback" not in rest, rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
