"""Who may open the DuckDB file: one process at a time, by an OS lock that dies with its holder.

DuckDB refuses every connection from a second process while one process has
the file open read-write, and its refusal reads "Could not set lock on
file". So every process of the node (the running node's DbWriter, `main.py
sync`, `gaps`, `heal`) opens the file only inside `StoreLock.hold()`, for
one unit of work, and closes it before letting go.

The lock is `flock(2)` on `<db>.lock` (through `filelock`, with its
soft-lock fallback switched off: a filesystem without flock fails loudly
instead of getting a lock file that could go stale). The kernel drops a
flock when its holder's file descriptors close, which includes SIGKILL and
power loss: nothing is left behind that could block the next process, and
there is no age heuristic to tune (DATA-001). The file itself stays; its
content only names the current holder so that a waiter can say who it is
waiting for.

Threads of one process are serialised by an in-process lock first, so they
never poll each other, and a thread that asks again while it already holds
the file gets `NestedSession` at once instead of waiting on itself.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import filelock

from infra.store.errors import NestedSession, StoreBusy

_process_locks: dict[str, threading.Lock] = {}
_process_holders: dict[str, str] = {}  # lock key -> who in this process holds it
_process_locks_guard = threading.Lock()
_held = threading.local()


def _process_lock(key: str) -> threading.Lock:
    with _process_locks_guard:
        lock = _process_locks.get(key)
        if lock is None:
            lock = _process_locks[key] = threading.Lock()
        return lock


def default_owner() -> str:
    """What this process is, as an operator would recognise it: its command line."""
    argv = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv)) or "python"
    return argv[:200]


@dataclass(frozen=True)
class Holder:
    """What the current holder wrote into the lock file."""

    pid: int
    host: str
    owner: str
    since: float  # unix seconds

    def describe(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        since = datetime.fromtimestamp(self.since, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        text = f"pid {self.pid} ({self.owner}) on {self.host} since {since}, {max(0.0, now - self.since):.1f} s ago"
        if self.host == socket.gethostname() and not _alive(self.pid):
            text += " [that process is gone; the lock is free for the next attempt]"
        return text


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StoreLock:
    """The right to open one DuckDB file. `hold(timeout_s)` is a context manager."""

    def __init__(self, db_path: Path, *, owner: str | None = None, poll_interval_s: float = 0.005):
        self.db_path = Path(db_path)
        self.path = self.db_path.with_name(self.db_path.name + ".lock")
        self.owner = owner or default_owner()
        self._poll = poll_interval_s
        self._key = os.path.abspath(self.path)
        self._file_lock = filelock.FileLock(
            self.path,
            thread_local=True,
            fallback_to_soft=False,
            preserve_lock_file=True,
            on_acquired=self._write_holder,
        )

    def _write_holder(self, fd: int) -> None:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "owner": self.owner, "since": time.time()}
        data = (json.dumps(record) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)

    def holder(self) -> Holder | None:
        """The last recorded holder (the current one while the lock is held), if readable."""
        try:
            record = json.loads(self.path.read_text(encoding="utf-8") or "null")
            return Holder(pid=int(record["pid"]), host=str(record["host"]), owner=str(record["owner"]),
                          since=float(record["since"]))
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def busy_in_process(self) -> bool:
        """True while some thread of this process holds (or is taking) this file."""
        return _process_lock(self._key).locked()

    def describe_holder(self) -> str:
        holder = self.holder()
        return holder.describe() if holder else "another process (it left no holder record)"

    @contextmanager
    def hold(self, timeout_s: float) -> Iterator[None]:
        """Hold the file exclusively; raise StoreBusy (naming the holder) after `timeout_s`."""
        held: set[str] = getattr(_held, "keys", None) or set()
        _held.keys = held
        if self._key in held:
            raise NestedSession(f"this thread already holds {self.db_path}; finish that session first")
        started = time.monotonic()
        in_process = _process_lock(self._key)
        if not in_process.acquire(timeout=max(0.0, timeout_s)):
            holder = _process_holders.get(self._key, "?")
            raise StoreBusy(self.db_path, f"{holder} in this process (pid {os.getpid()})", time.monotonic() - started)
        _process_holders[self._key] = (
            f"thread {threading.current_thread().name!r} ({self.owner}) since {time.strftime('%H:%M:%S')}"
        )
        try:
            remaining = max(0.0, timeout_s - (time.monotonic() - started))
            try:
                self._file_lock.acquire(timeout=remaining, poll_interval=self._poll)
            except filelock.Timeout:
                raise StoreBusy(self.db_path, self.describe_holder(), time.monotonic() - started) from None
            held.add(self._key)
            try:
                yield
            finally:
                held.discard(self._key)
                self._file_lock.release()
        finally:
            _process_holders.pop(self._key, None)
            in_process.release()
