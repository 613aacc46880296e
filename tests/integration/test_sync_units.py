"""The sync writes in units of whole pages, fetched ahead on a helper thread: the file is free
between units for the other processes of the node, and a store failure mid-sync stops the
fetcher, is reported, and keeps every unit reported stored."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import datetime, timedelta

import pytest

from infra.store import HistoryStore
from infra.store.sync import IN_FLIGHT, HistorySync, Progress, SyncFailed
from infra.store.testing import FakeVenue
from messages.types import UTC, utc_to_ms
from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

NOW = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
DAYS = 4  # 5,760 one-minute bars: six pages
PER_UNIT = 2  # pages per unit (unit_bars=2000)
LONG_DAYS = 10  # fifteen pages: more than the fetcher may run ahead of the store

_HOLDER = """
import sys
from infra.logging import configure_logging
configure_logging(console="off")
from infra.store import HistoryStore
with HistoryStore(sys.argv[1], owner="test-node", lock_timeout_s=20).session():
    print("held", flush=True)
    sys.stdin.readline()
"""


def _holder(db) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", _HOLDER, str(db)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert child.stdout.readline().strip() == "held"
    return child


def _fetchers() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("sync-fetch-")]


def test_a_store_failure_mid_sync_stops_the_fetcher_and_keeps_the_units_reported_stored(tmp_path):
    db = tmp_path / "sim.duckdb"
    HistoryStore(db).write_bars([])
    venue = FakeVenue(utc_to_ms(NOW))
    store = HistoryStore(db, lock_timeout_s=0.5)
    children: list[subprocess.Popen] = []

    def progress(p: Progress) -> None:
        # Once the first unit is committed, another process takes the file and keeps it:
        # the second unit's session cannot get it.
        if not children:
            children.append(_holder(db))

    sync = HistorySync(store, venue, now_ms=lambda: venue.now_ms, unit_bars=PER_UNIT * 1000, progress=progress)
    try:
        with pytest.raises(SyncFailed) as err:
            sync.sync("BTCUSDT", "1", NOW - timedelta(days=LONG_DAYS), NOW)
        report = err.value.report
        assert report.pages_stored == PER_UNIT and report.bars_stored == PER_UNIT * 1000
        assert "StoreBusy" in report.error and "test-node" in report.error
        assert report.remaining  # what is left is not known (the file stayed busy): all of the plan
        # The fetcher stopped: at most the unit being stored, a unit queued, the page the fetcher
        # holds for the queue and the requests on the wire (IN_FLIGHT).
        assert len(venue.requests) <= 3 * PER_UNIT + IN_FLIGHT < LONG_DAYS * 1440 // 1000
        assert _fetchers() == []
    finally:
        for child in children:
            child.kill()
            child.wait(10)
    with HistoryStore(db).session() as s:
        assert s.count() == PER_UNIT * 1000  # the unit reported stored is in the file
        assert s.series_info("BTCUSDT", "1").last_sync_at is None
    # The next run resumes: only what is missing is asked for, and then nothing is.
    venue.requests.clear()
    store.lock_timeout_s = 10
    report = sync.sync("BTCUSDT", "1", NOW - timedelta(days=LONG_DAYS), NOW)
    assert report.ok and report.bars_stored == LONG_DAYS * 1440 - PER_UNIT * 1000
    assert all(r[3] < utc_to_ms(NOW) - PER_UNIT * 1000 * 60_000 for r in venue.requests)


class WaitsForAnotherProcess(FakeVenue):
    """The first page of the second unit is answered only after another process had the file,
    which it asks for once the first unit is committed.

    The sync's writer is then waiting for this very page: if it kept the file from one unit
    to the next, the other process would time out instead.
    """

    def __init__(self, now_ms: int, db):
        super().__init__(now_ms)
        self.db = db
        self.first_unit_stored = threading.Event()
        self.other: subprocess.CompletedProcess | None = None
        self._claim = threading.Lock()
        self._claimed = False

    def fetch_klines(self, symbol, interval, start_ms, end_ms, limit=1000):
        # The first request for a page of the second unit waits (requests go two at a time, so
        # which of its pages is asked first is not fixed).
        with self._claim:
            mine = not self._claimed and end_ms < self.now_ms - PER_UNIT * 1000 * 60_000
            self._claimed = self._claimed or mine
        if mine:
            assert self.first_unit_stored.wait(20)
            self.other = subprocess.run(
                [sys.executable, "-c",
                 "import sys\nfrom infra.logging import configure_logging\nconfigure_logging(console='off')\n"
                 "from infra.store import HistoryStore\n"
                 "with HistoryStore(sys.argv[1], owner='db-writer', lock_timeout_s=10).session() as s:\n"
                 "    print(s.count(), flush=True)\n", str(self.db)],
                capture_output=True, text=True, cwd=REPO, timeout=30, check=False)
        return super().fetch_klines(symbol, interval, start_ms, end_ms, limit)


def test_another_process_gets_the_file_between_units(tmp_path):
    db = tmp_path / "sim.duckdb"
    venue = WaitsForAnotherProcess(utc_to_ms(NOW), db)
    store = HistoryStore(db, lock_timeout_s=20)
    report = HistorySync(store, venue, now_ms=lambda: venue.now_ms, unit_bars=PER_UNIT * 1000,
                         progress=lambda p: venue.first_unit_stored.set()).sync(
        "BTCUSDT", "1", NOW - timedelta(days=DAYS), NOW)
    assert venue.other is not None and venue.other.returncode == 0, venue.other
    assert int(venue.other.stdout.strip()) == PER_UNIT * 1000  # it had the file between units 1 and 2
    assert report.ok and report.bars_stored == DAYS * 1440
    with store.session() as s:
        assert s.count() == DAYS * 1440


@pytest.mark.timeout(30)  # the venue asks for a 60 s wait: only an interrupted backoff ends in time
def test_a_store_failure_ends_the_fetchers_rate_limit_wait_at_once(tmp_path):
    from infra.bybit.errors import RateLimited

    db = tmp_path / "sim.duckdb"
    HistoryStore(db).write_bars([])

    limited = threading.Event()

    class LimitedAfterTwo(FakeVenue):
        """The two newest pages are answered; every older one is rate limited (by window, not by
        call count: requests go two at a time, in no fixed order)."""

        def fetch_klines(self, symbol, interval, start_ms, end_ms, limit=1000):
            if end_ms < utc_to_ms(NOW) - 2000 * 60_000:
                self.requests.append((symbol, interval, start_ms, end_ms, limit))
                limited.set()
                raise RateLimited("too many visits", retry_after_s=60)
            return super().fetch_klines(symbol, interval, start_ms, end_ms, limit)

    venue = LimitedAfterTwo(utc_to_ms(NOW))
    store = HistoryStore(db, lock_timeout_s=0.5)
    children: list[subprocess.Popen] = []

    def progress(p: Progress) -> None:
        if not children:  # the first page is stored, the fetcher is waiting out the limit:
            assert limited.wait(10)  # now another process takes the file
            children.append(_holder(db))

    sync = HistorySync(store, venue, now_ms=lambda: venue.now_ms, unit_bars=1000, progress=progress)
    try:
        with pytest.raises(SyncFailed) as err:
            sync.sync("BTCUSDT", "1", NOW - timedelta(days=DAYS), NOW)
    finally:
        for child in children:
            child.kill()
            child.wait(10)
    report = err.value.report
    assert "StoreBusy" in report.error and report.bars_stored == 1000
    # The third and any other request on the wire with it were rate limited; none was sent after the stop.
    assert 3 <= len(venue.requests) <= 2 + IN_FLIGHT
    assert _fetchers() == []
