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
from typing import Callable, Iterator, TypeVar

import filelock

from infra.store.errors import NestedSession, StoreBusy

T = TypeVar("T")
# Waits shorter than this are not announced: the DbWriter's flushes (lock_wait_ms)
# say it themselves with db.flush_failed when the file stays busy.
ANNOUNCE_AFTER_S = 1.0
_wait_notice: Callable[[str], None] | None = None


def on_wait(notice: Callable[[str], None] | None) -> None:
    """A command's way to tell its user, once, that it is waiting (e.g. print to stderr)."""
    global _wait_notice
    _wait_notice = notice


def _log():
    from infra.logging import get_logger  # not at import: logging imports nothing of the store

    return get_logger("infra.store.lock")

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


def lock_holders(path: Path) -> list[int] | None:
    """Pids holding a granted flock/POSIX lock on `path` right now, from the kernel (/proc/locks).

    The holder record in the lock file is only the *last* one written; this is
    who holds it now, whoever it is (one of ours, or a process that took the
    lock some other way). Empty where /proc/locks is not available.
    """
    try:
        st = os.stat(path)
        with open("/proc/locks", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    pids = []
    for line in lines:
        parts = line.split()
        if len(parts) < 6 or "->" in parts:  # "->": a waiter, not a holder
            continue
        try:
            major, minor, inode = parts[5].split(":")
            pid = int(parts[4])
            if int(inode) == st.st_ino and int(major, 16) == os.major(st.st_dev) and int(minor, 16) == os.minor(st.st_dev):
                pids.append(pid)
        except ValueError:
            continue
    return sorted(set(pids))


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return "?"
    return " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(argv))[:200] or "?"


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
        """Who holds the lock now: the kernel's answer, with the holder record's details when it is theirs."""
        record = self.holder()
        kernel = lock_holders(self.path)
        if kernel is None:  # no /proc/locks: the record is all there is
            return record.describe() if record else "another process (it left no holder record)"
        others = [p for p in kernel if p != os.getpid()]
        if not others:
            return "no process any more (the holder let go as the wait ended; try again)"
        if record is not None and record.pid in others:
            return record.describe()
        return ", ".join(f"pid {p} ({command_line(p)}) on {socket.gethostname()}" for p in others)

    def _announce_wait(self, timeout_s: float, holder: str) -> None:
        """Said once, when a wait long enough to notice begins."""
        notice = _wait_notice
        _log().warning("store.waiting", path=str(self.db_path), holder=holder, timeout_s=round(timeout_s, 1),
                       file_only=notice is not None)
        if notice is not None:
            notice(f"waiting up to {timeout_s:g} s for the history store {self.db_path}: held by {holder}")

    def while_foreign(self, attempt: Callable[[], T], timeout_s: float, started: float) -> T:
        """Run `attempt` until it stops raising StoreBusy (a process that opened the DuckDB file
        without our lock) or `timeout_s` since `started` is spent; waits like the lock does."""
        announced = False
        while True:
            try:
                return attempt()
            except StoreBusy as exc:
                waited = time.monotonic() - started
                if waited >= timeout_s:
                    raise StoreBusy(self.db_path, exc.holder, waited) from None
                if not announced and timeout_s >= ANNOUNCE_AFTER_S:
                    announced = True
                    self._announce_wait(timeout_s, exc.holder)
                time.sleep(min(0.05, max(0.0, timeout_s - waited)))

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
            try:
                self._file_lock.acquire(timeout=0)
            except filelock.Timeout:
                if timeout_s >= ANNOUNCE_AFTER_S:
                    self._announce_wait(timeout_s, self.describe_holder())
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
