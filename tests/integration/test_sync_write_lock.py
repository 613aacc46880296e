"""DATA-002, defended: sync's *write* takes the lock itself.

test_sync_lock.py holds the file from the start, so the sync's planning
read is what waits, and a write path that skipped the lock would still
pass. Here the file is taken by another process only after the plan, while
the first page is on the wire: the page's write must wait for that process
to let go, and then succeed.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta

import pytest

from infra.store import HistoryStore
from infra.store.sync import HistorySync
from infra.store.testing import FakeVenue
from messages.types import UTC, utc_to_ms
from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

NOW = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
HOLD_S = 1.0

_HOLDER = """
import sys
from infra.logging import configure_logging
configure_logging(console="off")
from infra.store import HistoryStore
with HistoryStore(sys.argv[1], owner="test-node").session():
    print("held", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


class TakenMidSync(FakeVenue):
    """On the first page request, another process takes the file and keeps it for HOLD_S."""

    def __init__(self, now_ms: int, db):
        super().__init__(now_ms)
        self.db = db
        self.child: subprocess.Popen | None = None
        self.released_at: float | None = None

    def fetch_klines(self, *args, **kwargs):
        if self.child is None:
            self.child = subprocess.Popen([sys.executable, "-c", _HOLDER, str(self.db)], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, text=True, cwd=REPO)
            assert self.child.stdout.readline().strip() == "held"
            threading.Timer(HOLD_S, self._release).start()
        return super().fetch_klines(*args, **kwargs)

    def _release(self) -> None:
        self.released_at = time.monotonic()
        self.child.stdin.write("go\n")
        self.child.stdin.flush()


def test_a_page_write_waits_for_a_holder_that_came_after_the_plan(tmp_path):
    db = tmp_path / "sim.duckdb"
    HistoryStore(db).write_bars([])  # the file exists: the planning read is quick and unhindered
    venue = TakenMidSync(utc_to_ms(NOW), db)
    store = HistoryStore(db, lock_timeout_s=20)
    written_at: list[float] = []
    original = store.session

    def session(*args, **kwargs):  # observe when each session actually gets the file
        ctx = original(*args, **kwargs)

        class Observed:
            def __enter__(self):
                s = ctx.__enter__()
                written_at.append(time.monotonic())
                return s

            def __exit__(self, *exc):
                return ctx.__exit__(*exc)

        return Observed()

    store.session = session  # type: ignore[method-assign]
    try:
        report = HistorySync(store, venue, now_ms=lambda: venue.now_ms).sync("BTCUSDT", "1",
                                                                             NOW - timedelta(hours=2), NOW)
    finally:
        if venue.child is not None:
            venue.child.kill()
            venue.child.wait(10)
    assert venue.released_at is not None
    assert report.bars_stored == 120
    # Every session after the first page arrived (the plan was before it) began only once the holder let go.
    after_plan = written_at[1:]
    assert after_plan and all(t >= venue.released_at for t in after_plan), (written_at, venue.released_at)
    with HistoryStore(db).session() as s:
        assert s.count() == 120
