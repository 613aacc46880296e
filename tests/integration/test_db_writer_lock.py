"""While another process holds the history file, the kline callback never waits and no bar is lost (DATA-014)."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from actors.base import ActorContext, Directory, Role
from actors.db_writer import DbWriter
from actors.state_store import StateStore
from actors.ws_public import PublicFrameRouter
from infra.config import load_config
from infra.store import HistoryStore
from infra.store.testing import kline_frame, make_series
from messages.market import BarSource
from messages.queries import GetSnapshot
from messages.types import UTC

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 1, 1, tzinfo=UTC)

_HOLDER = """
import sys
from infra.logging import configure_logging
configure_logging(console="off")
from infra.store import HistoryStore
with HistoryStore(sys.argv[1], owner="test-sync").session():
    print("held", flush=True)
    sys.stdin.readline()
"""


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_no_bar_is_lost_while_another_process_holds_the_file(write_config):
    app = load_config(write_config("db_writer:\n  flush_max_bars: 50\n  flush_interval_ms: 20\n"
                                   "  lock_wait_ms: 20\n  retry_max_ms: 100\n"))
    directory = Directory()
    with capture_logs() as logs:
        for role, cls in ((Role.STATE_STORE, StateStore), (Role.DB_WRITER, DbWriter)):
            directory.register(role, cls.start(ActorContext(config=app, directory=directory)))
        db = app.node.db_path
        db.parent.mkdir(parents=True, exist_ok=True)
        holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(db)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, cwd=REPO)
        try:
            assert holder.stdout.readline().strip() == "held"
            bars = make_series("BTCUSDT", "1", T0, 3000, source=BarSource.WS)
            router = PublicFrameRouter(directory, generation=0)
            for bar in bars:
                router.on_kline(kline_frame(bar))  # what pybit's callback thread runs
            assert router.counts["frames"] == len(bars) and router.counts["undelivered"] == 0
            # The DbWriter keeps trying and failing while the other process holds the file.
            wait_until(lambda: sum(e["event"] == "db.flush_failed" for e in logs) >= 3, 10, "failed flushes")
            assert not any(e["event"] == "db.flush" for e in logs)
            holder.stdin.write("done\n")
            holder.stdin.flush()
            assert holder.wait(timeout=10) == 0
        finally:
            holder.kill()
        store = HistoryStore(db)

        def all_stored() -> bool:
            with store.session(timeout_s=5) as s:
                return s.count() == len(bars)

        wait_until(all_stored, 20, "every bar written after the lock freed")
    with store.session() as s:
        assert s.bars("BTCUSDT", "1") == bars
    snapshot = directory.get(Role.STATE_STORE).ask(GetSnapshot(), timeout=5)
    assert snapshot.klines[("BTCUSDT", "1")].start == bars[-1].open_time
    busy = [e for e in logs if e["event"] == "db.flush_failed"]
    assert all(e["busy"] for e in busy) and "test-sync" in busy[0]["error"]
