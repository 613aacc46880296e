"""Cross-process access to the history file (DATA-001, DATA-002).

Real processes, real flock, real DuckDB files: a holder killed with SIGKILL
must not block the next writer, and a waiter must be told which file and
which process it is waiting for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from infra.store import HistoryStore, NestedSession, StoreBusy
from infra.store.testing import make_series
from messages.types import UTC

pytestmark = pytest.mark.timeout(30)

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 1, 1, tzinfo=UTC)

# The child takes the store, writes and commits some bars, says "held", then
# waits for a line on stdin (or to be killed) before it lets go.
_HOLDER = """
import sys
from infra.logging import configure_logging
configure_logging(console="off")
from datetime import datetime, timezone
from infra.store import HistoryStore
from infra.store.testing import make_series
store = HistoryStore(sys.argv[1], owner="test-holder")
with store.session() as s:
    s.write_bars(make_series("BTCUSDT", "1", datetime(2024, 1, 1, tzinfo=timezone.utc), 100))
    print("held", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""

_FOREIGN = """
import sys, duckdb
conn = duckdb.connect(sys.argv[1])
print("held", flush=True)
sys.stdin.readline()
"""


def _spawn(script: str, db: Path) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    line = child.stdout.readline()  # bounded by the test timeout
    if line.strip() != "held":
        child.kill()
        raise AssertionError(f"holder did not start: {line!r} {child.stderr.read()}")
    return child


@pytest.fixture
def db(tmp_path):
    return tmp_path / "sim.duckdb"


def test_a_sigkilled_holder_does_not_block_the_next_writer(db):
    child = _spawn(_HOLDER, db)
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=10) == -signal.SIGKILL
    store = HistoryStore(db)
    # No stale-lock age to wait out (the reviewed design waited 5 minutes): the
    # kernel dropped the flock with the process, so a 1 s budget is plenty.
    result = store.write_bars(make_series("BTCUSDT", "1", T0, 110)[100:], timeout_s=1.0)
    assert result.written == 10
    with store.session(timeout_s=1.0) as s:
        assert s.count() == 110  # what the killed process committed survived (WAL replay)
        assert s.gaps("BTCUSDT", "1") == []


def test_a_waiter_is_told_the_file_and_the_holder(db):
    child = _spawn(_HOLDER, db)
    try:
        with pytest.raises(StoreBusy) as err:
            with HistoryStore(db).session(timeout_s=0.3):
                pass
        message = str(err.value)
        assert str(db) in message
        assert f"pid {child.pid}" in message and "test-holder" in message
        assert "database is locked" not in message
        assert err.value.waited_s >= 0.3
    finally:
        child.kill()
        child.wait(timeout=10)


def test_a_waiter_gets_in_as_soon_as_the_holder_lets_go(db):
    child = _spawn(_HOLDER, db)
    done = threading.Event()
    failure: list[BaseException] = []

    def write() -> None:
        try:
            HistoryStore(db).write_bars(make_series("ETHUSDT", "1", T0, 5), timeout_s=20)
        except BaseException as exc:  # surfaced below
            failure.append(exc)
        done.set()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        assert not done.wait(0.3), "the writer got in while another process held the file"
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "released"
        assert done.wait(10) and not failure, failure
    finally:
        child.kill()
        child.wait(timeout=10)
    with HistoryStore(db).session() as s:
        assert s.count("ETHUSDT") == 5 and s.count("BTCUSDT") == 100


def test_a_process_that_bypasses_the_lock_is_named_too(db):
    """DuckDB's own refusal ("Could not set lock on file") is turned into the same clear error."""
    HistoryStore(db).write_bars(make_series("BTCUSDT", "1", T0, 3))
    child = _spawn(_FOREIGN, db)
    try:
        with pytest.raises(StoreBusy) as err:
            with HistoryStore(db).session(timeout_s=0.5):
                pass
        assert str(db) in str(err.value) and f"pid {child.pid}" in str(err.value)
    finally:
        child.kill()
        child.wait(timeout=10)


def test_between_sessions_the_file_is_free_for_any_process(db):
    """The store keeps an in-memory DuckDB instance between sessions; the file itself must be released."""
    store = HistoryStore(db)
    store.write_bars(make_series("BTCUSDT", "1", T0, 7))
    reader = subprocess.run(
        [sys.executable, "-c", "import duckdb, sys; print(duckdb.connect(sys.argv[1]).execute("
         "'SELECT count(*) FROM ohlcv').fetchall()[0][0])", str(db)],
        capture_output=True, text=True, timeout=20,
    )
    assert reader.returncode == 0, reader.stderr
    assert reader.stdout.strip() == "7"
    with store.session() as s:  # and the store still works afterwards
        assert s.count() == 7


def test_threads_of_one_process_take_turns(db):
    store = HistoryStore(db)
    inside = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def first() -> None:
        with store.session() as s:
            order.append("first-in")
            inside.set()
            release.wait(10)
            s.write_bars(make_series("BTCUSDT", "1", T0, 1))
            order.append("first-out")

    def second() -> None:
        inside.wait(10)
        with HistoryStore(db).session() as s:
            order.append("second-in")
            s.write_bars(make_series("ETHUSDT", "1", T0, 1))

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    inside.wait(10)
    release.set()
    for t in threads:
        t.join(10)
    assert order == ["first-in", "first-out", "second-in"]


def test_a_thread_asking_twice_is_told_at_once(db):
    store = HistoryStore(db, lock_timeout_s=20)
    with store.session():
        started = time.monotonic()
        with pytest.raises(NestedSession):
            with store.session():
                pass
        assert time.monotonic() - started < 5  # at once, not after the 20 s lock timeout
