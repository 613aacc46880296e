"""DbWriter: batches closed bars into the history file, never loses one, drains on stop (DATA-014)."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal

import pykka
import pytest
from structlog.testing import capture_logs

from actors.base import ActorContext, Directory
from actors.db_writer import DbWriter, FlushReport
from infra.config import load_config
from infra.bybit.errors import Rejected
from infra.store import BarRange, HistoryStore
from infra.store.testing import FakeVenue, make_series
from messages.market import BarSource
from messages.commands import Flush
from messages.queries import GetWriterStats, WriterStats
from messages.types import UTC, utc_to_ms

pytestmark = pytest.mark.timeout(30)

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def wait_until(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


@pytest.fixture
def make_writer(write_config):
    started: list[pykka.ActorRef] = []

    def make(max_bars: int = 500, interval_ms: int = 60_000, source=None, **extra) -> tuple[pykka.ActorRef, HistoryStore]:
        fields = {"flush_max_bars": max_bars, "flush_interval_ms": interval_ms, "lock_wait_ms": 50,
                  "retry_max_ms": 100, **extra}
        body = "db_writer:\n" + "".join(f"  {k}: {v}\n" for k, v in fields.items())
        app = load_config(write_config(body))
        store = HistoryStore.for_node(app.node, owner="test-observer")
        ref = DbWriter.start(ActorContext(config=app, directory=Directory()), source=source)
        started.append(ref)
        return ref, store

    return make


def stored(store: HistoryStore) -> int:
    if not store.exists():
        return 0
    with store.session(timeout_s=5) as s:
        return s.count()


def logged(logs, name):
    return [e for e in logs if e["event"] == name]


@contextmanager
def file_held_elsewhere(path, owner="someone else"):
    """Another thread holds the history file; setting the yielded event lets it go."""
    holder_in, release = threading.Event(), threading.Event()

    def hold() -> None:
        with HistoryStore(path, owner=owner).session():
            holder_in.set()
            release.wait(20)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert holder_in.wait(10)
    try:
        yield release
    finally:
        release.set()
        holder.join(10)


def test_flushes_when_the_batch_is_full(make_writer):
    with capture_logs() as logs:
        ref, store = make_writer(max_bars=10)
        for bar in make_series("BTCUSDT", "1", T0, 25):
            ref.tell(bar)
        wait_until(lambda: len(logged(logs, "db.flush")) >= 1, what="a size flush")
        flush = logged(logs, "db.flush")[0]
    assert flush["reason"] == "size" and flush["bars"] >= 10 and flush["duration_ms"] >= 0
    assert stored(store) >= 10


def test_flushes_after_the_interval(make_writer):
    with capture_logs() as logs:
        ref, store = make_writer(max_bars=1000, interval_ms=50)
        for bar in make_series("BTCUSDT", "1", T0, 3):
            ref.tell(bar)
        wait_until(lambda: stored(store) == 3, what="an interval flush")
    assert [e["reason"] for e in logged(logs, "db.flush")] == ["interval"]


def test_a_flush_ask_writes_now_and_reports(make_writer):
    ref, store = make_writer()
    bars = make_series("BTCUSDT", "60", T0, 40)
    for bar in bars:
        ref.tell(bar)
    assert ref.ask(Flush(), timeout=10) == FlushReport(written=40, pending=0)
    with store.session() as s:
        assert s.bars("BTCUSDT", "60") == bars
    assert ref.ask(Flush(), timeout=10) == FlushReport(written=0, pending=0)


def test_a_repeated_bar_is_written_once_the_latest_copy(make_writer):
    ref, store = make_writer()
    first, second = make_series("BTCUSDT", "1", T0, 1)[0], None
    second = first.model_copy(update={"close": Decimal("20003"), "high": Decimal("20100")})
    ref.tell(first)
    ref.tell(second)
    assert ref.ask(Flush(), timeout=10).written == 1
    with store.session() as s:
        assert s.bars("BTCUSDT", "1") == [second]


def test_drains_its_mailbox_on_stop(make_writer):
    ref, store = make_writer(max_bars=100_000, interval_ms=600_000)
    bars = make_series("BTCUSDT", "1", T0, 2000)
    for bar in bars:
        ref.tell(bar)
    ref.stop(block=True, timeout=20)  # told after the bars: Pykka delivers them first
    with store.session() as s:
        assert s.count() == 2000 and s.gaps("BTCUSDT", "1") == []


def test_a_busy_file_keeps_the_bars_and_retries_until_it_frees(make_writer):
    with capture_logs() as logs:
        ref, store = make_writer(max_bars=5)
        with file_held_elsewhere(store.path):
            bars = make_series("BTCUSDT", "1", T0, 50)
            for bar in bars:
                ref.tell(bar)
            wait_until(lambda: len(logged(logs, "db.flush_failed")) >= 2, what="failed flushes")
            report = ref.ask(Flush(), timeout=10)
            assert report.written == 0 and report.pending == 50 and "someone else" in report.error
        wait_until(lambda: stored(store) == 50, what="the retry after the lock freed")
    failed = logged(logs, "db.flush_failed")[0]
    assert failed["busy"] is True and failed["bars"] > 0 and failed["retry_in_ms"] > 0
    assert logged(logs, "db.flush")[-1]["failed_attempts"] >= 1
    assert ref.is_alive()


def test_stats_show_what_is_held_the_last_flush_and_a_run_of_failures(make_writer):
    ref, store = make_writer(max_bars=100_000)
    fresh = ref.ask(GetWriterStats(), timeout=10)
    assert fresh == WriterStats(pending_bars=0, mailbox=0, last_flush_at=None, last_flush_bars=0,
                                failing_since=None, last_error=None)
    for bar in make_series("BTCUSDT", "1", T0, 7):
        ref.tell(bar)
    held = ref.ask(GetWriterStats(), timeout=10)
    assert held.pending_bars == 7 and held.last_flush_at is None
    assert ref.ask(Flush(), timeout=10).written == 7
    flushed = ref.ask(GetWriterStats(), timeout=10)
    assert flushed.pending_bars == 0 and flushed.last_flush_bars == 7 and flushed.failing_since is None
    assert datetime.fromisoformat(flushed.last_flush_at).tzinfo is not None

    with file_held_elsewhere(store.path, owner="the stats test"):
        for bar in make_series("BTCUSDT", "1", T0 + timedelta(hours=1), 3):
            ref.tell(bar)
        assert ref.ask(Flush(), timeout=10).error
        first = ref.ask(GetWriterStats(), timeout=10)
        assert first.pending_bars == 3 and first.failing_since is not None
        assert "StoreBusy" in first.last_error and "the stats test" in first.last_error
        assert first.last_flush_at == flushed.last_flush_at and first.last_flush_bars == 7
        ref.ask(Flush(), timeout=10)
        # The run of failures started at the first one, not the latest.
        assert ref.ask(GetWriterStats(), timeout=10).failing_since == first.failing_since
    assert ref.ask(Flush(), timeout=10).written == 3
    healed = ref.ask(GetWriterStats(), timeout=10)
    assert healed.failing_since is None and healed.last_error is None and healed.last_flush_bars == 3


def test_stats_count_the_messages_still_queued(make_writer):
    ref, store = make_writer(max_bars=100_000, lock_wait_ms=10_000)
    with file_held_elsewhere(store.path) as release:
        ref.tell(make_series("BTCUSDT", "1", T0, 1)[0])
        ref.tell(Flush())  # waits for the held file: nothing behind it is served meanwhile
        answer = ref.ask(GetWriterStats(), block=False)
        for bar in make_series("BTCUSDT", "1", T0 + timedelta(hours=1), 20):
            ref.tell(bar)  # queued behind the stats ask
        release.set()
        stats = answer.get(timeout=15)
    assert stats.mailbox == 20 and stats.pending_bars == 0 and stats.last_flush_bars == 1


def test_an_unopenable_file_does_not_kill_the_writer(make_writer):
    ref, store = make_writer(max_bars=3)
    store.path.mkdir(parents=True)  # a directory where the file should be: every open fails
    for bar in make_series("BTCUSDT", "1", T0, 3):
        ref.tell(bar)
    report = ref.ask(Flush(), timeout=10)
    assert report.pending == 3 and report.error
    assert ref.is_alive()
    store.path.rmdir()
    wait_until(lambda: stored(store) == 3, what="the retry once the file can be opened")


def test_at_stop_it_waits_for_the_file_then_writes(make_writer):
    ref, store = make_writer(max_bars=100_000, drain_timeout_s=15)
    with file_held_elsewhere(store.path) as release:
        for bar in make_series("BTCUSDT", "1", T0, 10):
            ref.tell(bar)
        stopper = threading.Thread(target=lambda: ref.stop(block=True, timeout=20))
        stopper.start()
        release.set()
        stopper.join(20)
    assert stored(store) == 10


def test_a_drain_that_cannot_finish_says_what_is_missing(make_writer):
    with capture_logs() as logs:
        ref, store = make_writer(max_bars=100_000, drain_timeout_s=0.3)
        with file_held_elsewhere(store.path):
            for bar in make_series("ETHUSDT", "5", T0, 4):
                ref.tell(bar)
            ref.stop(block=True, timeout=10)
    (failed,) = logged(logs, "db.drain_failed")
    assert failed["bars"] == 4
    assert failed["ranges"] == {"ETHUSDT/5": ["2024-01-01T00:00:00+00:00", "2024-01-01T00:15:00+00:00"]}


def test_a_bar_that_cannot_be_stored_is_logged_and_the_rest_written(make_writer):
    with capture_logs() as logs:
        ref, store = make_writer()
        good, bad = make_series("BTCUSDT", "1", T0, 2)
        bad = bad.model_copy(update={"turnover": Decimal("0.0000000000000000000001")})
        ref.tell(good)
        ref.tell(bad)
        assert ref.ask(Flush(), timeout=10) == FlushReport(written=1, pending=0)
    (rejected,) = logged(logs, "db.bar_rejected")
    assert rejected["open_time"] == bad.open_time.isoformat()
    assert stored(store) == 1


def test_at_start_it_refetches_what_the_last_run_left_missing(make_writer):
    """A crash (or a stop) leaves the history ending early; the next start heals it from the venue."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    earlier = make_series("BTCUSDT", "1", now - timedelta(minutes=300), 200, source=BarSource.WS)
    ref, store = make_writer()
    for bar in earlier:
        ref.tell(bar)
    ref.stop(block=True, timeout=10)  # the history now ends 100 minutes ago
    venue = FakeVenue(utc_to_ms(datetime.now(UTC)))
    with capture_logs() as logs:
        ref, store = make_writer(source=venue)
        wait_until(lambda: any(e["event"] == "db.catch_up" for e in logs), what="the catch-up")
    (done,) = [e for e in logs if e["event"] == "db.catch_up"]
    assert done["log_level"] == "info" and done["series"]["BTCUSDT/1"].endswith("bars")
    with store.session() as s:
        info = s.series_info("BTCUSDT", "1")
        assert s.gaps("BTCUSDT", "1") == []
        # catch_up_days (1 in this config): the whole last day is made complete ...
        assert info.first_open <= now - timedelta(days=1) + timedelta(minutes=1)
        assert info.last_open >= now - timedelta(minutes=1)
        assert s.bars("BTCUSDT", "1", BarRange(utc_to_ms(earlier[0].open_time), utc_to_ms(earlier[-1].close_time))) == earlier
    # ... by fetching only what was missing: no request reaches into the stored run.
    stored = (utc_to_ms(earlier[0].open_time), utc_to_ms(earlier[-1].open_time))
    assert venue.requests and all(end < stored[0] or start > stored[1] for _, _, start, end, _ in venue.requests)


def test_a_failed_catch_up_is_logged_and_the_writer_lives_on(make_writer):
    venue = FakeVenue(utc_to_ms(datetime.now(UTC)), faults=[Rejected(10001, "params error")])
    with capture_logs() as logs:
        ref, store = make_writer(source=venue)
        wait_until(lambda: any(e["event"] == "db.catch_up" for e in logs), what="the catch-up")
        (done,) = [e for e in logs if e["event"] == "db.catch_up"]
        assert done["log_level"] == "warning" and "10001" in done["series"]["BTCUSDT/1"]
        bar = make_series("BTCUSDT", "1", T0, 1)[0]
        ref.tell(bar)
        assert ref.ask(Flush(), timeout=10).written == 1


class GatedVenue(FakeVenue):
    """Blocks the first fetch until the test opens the gate."""

    def __init__(self, now_ms):
        super().__init__(now_ms)
        self.entered, self.gate = threading.Event(), threading.Event()

    def fetch_klines(self, *args, **kwargs):
        self.entered.set()
        assert self.gate.wait(10), "the test never opened the gate"
        return super().fetch_klines(*args, **kwargs)


def test_a_stop_during_the_catch_up_is_served_between_two_series(write_config):
    """Ctrl-C must not wait for every series of a long catch-up to be fetched."""
    app = load_config(write_config(
        "symbols:\n  BTCUSDT:\n    intervals: ['1', '5']\n  ETHUSDT:\n    intervals: ['1']\n"
        "db_writer:\n  lock_wait_ms: 50\n"
    ))
    venue = GatedVenue(utc_to_ms(datetime.now(UTC)))
    ref = DbWriter.start(ActorContext(config=app, directory=Directory()), source=venue)
    assert venue.entered.wait(10)  # the first series is being fetched
    stopped = ref.stop(block=False)  # queued behind the running step
    venue.gate.set()
    assert stopped.get(timeout=10) is True
    assert {(sym, interval) for sym, interval, *_ in venue.requests} == {("BTCUSDT", "1")}


def test_the_catch_up_judges_closed_bars_by_the_venues_clock_not_ours(make_writer):
    """Our clock 60-120 s ahead of the venue's: by ours the venue's forming bar has closed. Stored, it
    would hold partial values (and could overwrite the closed bar the stream already stored)."""
    ours = utc_to_ms(datetime.now(UTC))
    # The venue's now sits 30 s into its minute, our clock 60-120 s ahead of it. The FakeVenue's clock
    # stands still while the catch-up's skew-corrected one runs on: a venue now in the last moments
    # of its minute let that one pass the minute before the sync read it, and the bar the venue still
    # called open was stored as closed (the test failed when it started at hh:mm:29.9x).
    venue_now = (ours - 90_000) // 60_000 * 60_000 + 30_000
    venue = FakeVenue(venue_now)  # answers with the bar still open at its own now, as Bybit does
    with capture_logs() as logs:
        ref, store = make_writer(source=venue)
        wait_until(lambda: any(e["event"] == "db.catch_up" for e in logs), what="the catch-up")
    forming_open = venue_now // 60_000 * 60_000
    assert venue.requests, "the catch-up fetched nothing"
    with store.session() as s:
        info = s.series_info("BTCUSDT", "1")
        assert info is not None and utc_to_ms(info.last_open) == forming_open - 60_000


def test_a_catch_up_without_the_venues_clock_fetches_nothing(make_writer):
    class NoClock(FakeVenue):
        def server_time(self):
            raise Rejected(10002, "the request time exceeds the time window range")

    venue = NoClock(utc_to_ms(datetime.now(UTC)))
    with capture_logs() as logs:
        ref, store = make_writer(source=venue)
        wait_until(lambda: any(e["event"] == "db.catch_up" for e in logs), what="the catch-up")
    (done,) = [e for e in logs if e["event"] == "db.catch_up"]
    assert done["log_level"] == "warning" and "clock is unknown" in done["series"]["BTCUSDT/1"]
    assert venue.requests == []


def test_the_writer_keeps_answering_and_flushing_while_the_catch_up_waits_on_the_venue(make_writer):
    """A catch-up after a long downtime (weeks of bars, a rate limit's reset hint of up to 120 s)
    blocks on the venue far longer than the Supervisor's heartbeat (30 s). On the actor's own
    thread it answered no Ping and wrote no live bar meanwhile: the Supervisor replaced a healthy
    writer as stuck (and a second catch-up started over the first), and every closed bar the
    stream delivered waited in the mailbox instead of reaching the file."""
    from messages.control import Ping

    venue = GatedVenue(utc_to_ms(datetime.now(UTC)))
    try:
        ref, store = make_writer(source=venue, interval_ms=60_000)
        assert venue.entered.wait(10)  # the catch-up is waiting on the venue
        assert ref.ask(Ping(), timeout=2) is True
        live = make_series("BTCUSDT", "5", T0, 3)
        for bar in live:
            ref.tell(bar)
        assert ref.ask(Flush(), timeout=5) == FlushReport(written=3, pending=0)
        assert stored(store) == 3
    finally:
        venue.gate.set()
    ref.stop(block=True, timeout=10)


def test_a_bar_that_closed_between_the_catch_up_and_the_streams_first_bar_is_fetched(make_writer):
    """The catch-up stores the bars closed by the venue's clock when it runs; the public stream
    delivers closed bars from its first confirm on. A bar that closed in between (the socket
    subscribed a moment after the catch-up read the clock, or was still connecting) reached
    neither: a hole in the history file for as long as the node runs, and one no running part
    of the node ever looked for."""
    from infra.store.testing import make_bar

    real = utc_to_ms(datetime.now(UTC))
    venue_now = real - real % 60_000 - 10 * 60_000 + 30_000  # 30 s into a minute, in the past
    forming = venue_now - venue_now % 60_000  # still open when the catch-up runs
    venue = FakeVenue(venue_now)
    with capture_logs() as logs:
        ref, store = make_writer(source=venue, interval_ms=50)
        wait_until(lambda: logged(logs, "db.catch_up"), what="the catch-up")
        venue.now_ms = forming + 3 * 60_000  # the venue's clock moved on
        first_ws = make_bar("BTCUSDT", "1", forming + 60_000, source=BarSource.WS)
        ref.tell(first_ws)  # the stream's first closed bar: the one after `forming`
        wait_until(lambda: logged(logs, "db.seam_synced"), what="the seam between catch-up and stream")
    ref.ask(Flush(), timeout=5)
    with store.session() as s:
        window = BarRange(forming - 60_000, forming + 2 * 60_000)
        assert s.gaps("BTCUSDT", "1", window) == []
        assert [b.source for b in s.bars("BTCUSDT", "1", window)] == ["rest", "rest", "ws"]
