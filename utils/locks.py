"""File locks: a short mutex around a shared file's read-modify-write, and the run lock of an output folder.

Both are `flock` locks, which the kernel releases when the holder dies, so a killed run never
blocks the next one. The run lock also writes its holder (pid, host, start time, command) into the
lock file: a second run refuses with that line, and a run that finds the file of a dead holder
says it takes the stale lock over.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from utils.config import ConfigError

RUN_LOCK_FILE = ".run.lock"


class FolderInUseError(RuntimeError):
    """Another live run holds the output folder."""


@contextlib.contextmanager
def exclusive(lock_path: str | os.PathLike) -> Iterator[None]:
    """Block until this process holds `lock_path` exclusively (a short read-modify-write)."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _holder() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "command": " ".join([sys.executable, *sys.argv])}


def describe_holder(holder: dict) -> str:
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: {holder.get('command')}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _read_holder(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def check_writable_folder(folder: str | os.PathLike, key: str) -> Path:
    """A ConfigError naming `key` if `folder` is a file or could not be created or written; creates nothing."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing == folder else f"lies under the file '{existing}'"
        raise ConfigError(f"{key} '{folder}' {what}, not a folder; choose a folder path for {key}")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == folder else f" (its nearest existing parent '{existing}' is read-only)"
        raise ConfigError(f"{key} '{folder}' is not writable{where}; fix the permissions or choose another {key}")
    return folder


@contextlib.contextmanager
def hold_folder(folder: str | os.PathLike, key: str, enabled: bool = True) -> Iterator[None]:
    """Hold the run lock of `folder` (created if needed; removed again if the run wrote nothing) while the block runs.

    The lock file exists only while a run holds it, or after a run was killed.

    `enabled=False` (non-main ranks of one job) checks the folder only. Raises FolderInUseError
    naming the holder when another live run has the folder; a lock file left by a dead run on this
    host is taken over with a note on stderr.
    """
    folder = check_writable_folder(folder, key)
    if not enabled:
        yield
        return
    path = folder / RUN_LOCK_FILE
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{key} '{folder}' cannot be created ({err.strerror}); choose another {key}") from None
    lock = _acquire(path, key, folder)
    try:
        previous = _read_holder(path)
        if previous and previous.get("host") == socket.gethostname() and not pid_alive(int(previous.get("pid", -1))):
            print(f"note: taking over the stale lock {path} of a run that no longer exists ({describe_holder(previous)})",
                  file=sys.stderr, flush=True)
        lock.seek(0)
        lock.truncate()
        lock.write(json.dumps(_holder()) + "\n")
        lock.flush()
        yield
    finally:
        path.unlink(missing_ok=True)  # before unlocking: a waiting opener then sees its file is gone and retries
        if created and not any(folder.iterdir()):
            folder.rmdir()  # a run that failed before writing anything leaves no folder behind
        lock.close()


def _acquire(path: Path, key: str, folder: Path):
    """The open, exclusively flocked lock file at `path` (retried when a releasing holder unlinked it meanwhile)."""
    while True:
        try:
            lock = open(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+")
        except OSError as err:
            raise ConfigError(f"{key} '{folder}': cannot create {path} ({err.strerror}); fix the permissions or "
                              f"choose another {key}") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            lock.close()
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = _read_holder(path) or {}
            raise FolderInUseError(f"{key} '{folder}' is in use by another run ({describe_holder(holder)}); wait for it "
                                   f"to finish or choose another {key}") from None
        try:
            if os.stat(path).st_ino == os.fstat(lock.fileno()).st_ino:
                return lock
        except FileNotFoundError:
            pass
        lock.close()
