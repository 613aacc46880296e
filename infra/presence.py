"""Is a node running on this data directory and venue? One answer for every command.

The running node holds an OS lock (flock, via filelock) on
`<data_dir>/run/<venue>.node.lock` for its whole life and writes its pid
beside it. The lock dies with the process, so a SIGKILLed node never looks
alive; a pid file alone could not tell that. `status`, `signal` and
`panic` ask `running_pid()` before they talk to a node.
"""

from __future__ import annotations

import os
from pathlib import Path

from filelock import FileLock, Timeout


def run_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "run"


def _lock_path(data_dir: Path, venue: str) -> Path:
    return run_dir(data_dir) / f"{venue}.node.lock"


def _pid_path(data_dir: Path, venue: str) -> Path:
    return run_dir(data_dir) / f"{venue}.node.pid"


class NodePresence:
    """Held by `run` for the node's whole life."""

    def __init__(self, data_dir: Path, venue: str):
        self._data_dir = Path(data_dir)
        self._venue = venue
        self._lock = FileLock(str(_lock_path(data_dir, venue)), thread_local=False)

    def __enter__(self) -> "NodePresence":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the node lock now, or raise NodeAlreadyRunning naming the holder."""
        run_dir(self._data_dir).mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise NodeAlreadyRunning(running_pid(self._data_dir, self._venue)) from None
        _pid_path(self._data_dir, self._venue).write_text(f"{os.getpid()}\n")

    def release(self) -> None:
        _pid_path(self._data_dir, self._venue).unlink(missing_ok=True)
        self._lock.release()


class NodeAlreadyRunning(RuntimeError):
    def __init__(self, pid: int | None):
        self.pid = pid
        super().__init__(f"a node is already running on this data directory and venue (pid {pid})")


def running_pid(data_dir: Path, venue: str) -> int | None:
    """The pid of the node holding the lock, or None when no node runs (creates nothing)."""
    lock_path = _lock_path(data_dir, venue)
    if not lock_path.exists():
        return None
    probe = FileLock(str(lock_path), thread_local=False)
    try:
        probe.acquire(timeout=0)
    except Timeout:
        try:
            return int(_pid_path(data_dir, venue).read_text().strip())
        except (OSError, ValueError):
            return -1  # held, but its pid file is not written yet
    probe.release()
    return None
