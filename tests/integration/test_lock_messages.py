"""What a waiter is told about the history file's lock (issue 12): the holder *now*, said once
when the wait starts, the same wait for a process that opened the DuckDB file directly, and a
damaged file reported as such, not as busy."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from infra.store import HistoryStore, StoreBusy
from infra.store.lock import StoreLock, on_wait
from infra.store.testing import make_series
from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)

# Takes the flock the way any process could, without writing a holder record.
_RAW_FLOCK = """
import fcntl, sys
f = open(sys.argv[1], "a+")
fcntl.flock(f, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()
"""

# Opens the DuckDB file directly (no node lock), lets go after argv[2] seconds.
_FOREIGN = """
import sys, time, duckdb
conn = duckdb.connect(sys.argv[1])
print("held", flush=True)
time.sleep(float(sys.argv[2]))
conn.close()
print("released", flush=True)
sys.stdin.readline()
"""


def _spawn(script: str, *args: str) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=REPO)
    line = child.stdout.readline()
    if line.strip() != "held":
        child.kill()
        raise AssertionError(f"holder did not start: {line!r} {child.stderr.read()}")
    return child


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "sim.duckdb"
    HistoryStore(path).write_bars(make_series("BTCUSDT", "1", T0, 3))
    return path


@pytest.fixture
def notices():
    said: list[str] = []
    on_wait(said.append)
    yield said
    on_wait(None)


def test_the_holder_named_is_the_one_holding_it_now_not_the_last_record(db):
    # The record names a process that is gone (the last holder, exited) ...
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone_pid = int(gone.stdout)
    lock = StoreLock(db)
    lock.path.write_text(f'{{"pid": {gone_pid}, "host": "{os.uname().nodename}", "owner": "old node", '
                         f'"since": {time.time() - 60}}}\n')
    # ... while another process holds the lock without writing one.
    child = _spawn(_RAW_FLOCK, str(lock.path))
    try:
        with pytest.raises(StoreBusy) as err:
            with HistoryStore(db).session(timeout_s=0.3):
                pass
    finally:
        child.kill()
        child.wait(10)
    message = str(err.value)
    assert f"pid {child.pid}" in message and f"pid {gone_pid}" not in message and "old node" not in message


def test_a_long_wait_is_announced_once_with_the_holder(db, notices, events):
    child = _spawn(_RAW_FLOCK, str(StoreLock(db).path))
    try:
        with pytest.raises(StoreBusy):
            with HistoryStore(db).session(timeout_s=1.2):
                pass
    finally:
        child.kill()
        child.wait(10)
    assert len(notices) == 1 and f"pid {child.pid}" in notices[0] and "waiting up to 1.2 s" in notices[0]
    waiting = [e for e in events() if e["event"] == "store.waiting"]
    assert len(waiting) == 1 and f"pid {child.pid}" in waiting[0]["holder"]


def test_a_short_wait_is_not_announced(db, notices):
    child = _spawn(_RAW_FLOCK, str(StoreLock(db).path))
    try:
        with pytest.raises(StoreBusy):
            with HistoryStore(db).session(timeout_s=0.2):  # a DbWriter flush's wait
                pass
    finally:
        child.kill()
        child.wait(10)
    assert notices == []


def test_a_process_that_opened_the_file_directly_is_waited_for(db, notices):
    child = _spawn(_FOREIGN, str(db), "1.0")
    try:
        started = time.monotonic()
        with HistoryStore(db).session(timeout_s=20) as s:  # once it lets go, we get in
            assert s.count() == 3
        waited = time.monotonic() - started
    finally:
        child.kill()
        child.wait(10)
    assert waited >= 0.5  # it waited instead of failing at once
    assert len(notices) == 1 and f"pid {child.pid}" in notices[0]


def test_a_process_that_keeps_the_file_open_is_named_after_the_full_wait(db):
    child = _spawn(_FOREIGN, str(db), "30")
    try:
        with pytest.raises(StoreBusy) as err:
            with HistoryStore(db).session(timeout_s=1.0):
                pass
    finally:
        child.kill()
        child.wait(10)
    assert err.value.waited_s >= 1.0 and f"pid {child.pid}" in str(err.value)


def test_a_damaged_file_is_its_own_event_not_store_busy(tmp_path):
    data = tmp_path / "data"
    (data / "logs").mkdir(parents=True)  # gaps logs to a file only where one is already kept
    (data / "sim.duckdb").write_bytes(b"\x00garbage" * 512)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYBIT_")}
    env.update(BYBIT_NODE_DATA_DIR=str(data), BYBIT_NODE_LOG__CONSOLE="plain")
    done = subprocess.run([sys.executable, str(REPO / "main.py"), "--config", str(REPO / "config.yaml"), "gaps"],
                          capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert done.returncode == 1
    from tests.helpers import read_events

    names = [e["event"] for e in read_events(data / "logs" / "node.jsonl")]
    assert "store.unreadable" in names and "store.busy" not in names
    assert done.stderr.count("is not a readable history file") == 1  # said once, not by the log line too
