"""Run an entry script as a torchrun worker that dies with the torchrun agent that started it.

    python -m utils.parent_death SCRIPT [ARGS ...]      (torchrun -m utils.parent_death SCRIPT ...)

torchrun starts each worker in its own session and forwards SIGINT/SIGTERM to it, but a SIGKILLed
agent (e.g. `kill -9` of `bash inference.sh`, whose bash is replaced by torchrun through `exec`)
forwards nothing and its workers run on to the end. Here the worker asks Linux for SIGTERM when its
parent dies (PR_SET_PDEATHSIG, kept across the exec of the script), then becomes the script itself
(same pid, so torchrun still supervises it). Children of the worker (ffmpeg) see their input pipe
close and exit with it.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
AGENT_PID_ENV = "LAUNCHER_AGENT_PID"  # set by utils/torchrun_launch.sh: the pid that becomes torchrun


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Deliver `sig` to this process when its parent exits (Linux; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def parent_already_gone(expected_parent: int | None) -> bool:
    """The agent may die before die_with_parent runs: then this process was already reparented."""
    return expected_parent is not None and os.getppid() != expected_parent


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if argv else 2)
    die_with_parent()
    agent = os.environ.get(AGENT_PID_ENV)
    if parent_already_gone(int(agent) if agent else None):
        print(f"torchrun agent {agent} is gone before this worker started; exiting", file=sys.stderr)
        sys.exit(1)
    # the interpreter and its options as torchrun gave them (e.g. -u), then the script and its arguments
    interpreter = sys.orig_argv[: len(sys.orig_argv) - len(sys.argv) - 1]
    os.execv(sys.executable, [*interpreter, *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
