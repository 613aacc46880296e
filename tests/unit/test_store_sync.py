"""Sync against a Bybit-shaped kline source: every gap filled, venue holes remembered,
transient errors retried, failure reported (DATA-006, DATA-007)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from structlog.testing import capture_logs

from infra.bybit.errors import RateLimited, Rejected, TransientError
from infra.store import BarRange, HistoryStore
from infra.store.sync import IN_FLIGHT, HistorySync, RetryPolicy, SyncFailed
from infra.store.testing import FakeVenue, make_series, opens
from messages.types import UTC, ms_to_utc, utc_to_ms

pytestmark = pytest.mark.timeout(30)

NOW = datetime(2024, 3, 10, 12, 30, 30, tzinfo=UTC)  # mid-bar: the 12:30 minute is still open
NOW_MS = utc_to_ms(NOW)
OPEN = NOW.replace(second=0)  # the open bar; everything before it has closed
DAY = timedelta(days=1)
FAST = RetryPolicy(attempts=4, initial_s=0.01, max_s=0.05)


@pytest.fixture
def store(tmp_path):
    return HistoryStore(tmp_path / "sim.duckdb", lock_timeout_s=5)


def syncer(store, venue, **kw):
    waits: list[float] = []
    kw.setdefault("retry", FAST)
    s = HistorySync(store, venue, now_ms=lambda: venue.now_ms, sleep=waits.append, **kw)
    s.waits = waits  # type: ignore[attr-defined]
    return s


def test_an_empty_store_is_filled_page_by_page_and_the_open_bar_dropped(store):
    venue = FakeVenue(NOW_MS)
    start = OPEN - 2 * DAY
    report = syncer(store, venue).sync("BTCUSDT", "1", start, NOW + DAY)
    expected = 2 * 1440  # up to 12:29, the last closed bar
    assert report.ok and report.bars_stored == expected
    assert report.requests == 3 and all(r[4] == 1000 for r in venue.requests)
    # each request holds at most 1000 bars, and the pages go newest first: with two on the wire
    # the first two may reach the venue in either order, but the oldest window is asked only
    # after the newest was answered
    spans = [(r[3] - r[2]) // 60_000 + 1 for r in venue.requests]
    assert max(spans) <= 1000
    by_age = sorted(venue.requests, key=lambda r: r[3], reverse=True)
    assert venue.requests.index(by_age[0]) < venue.requests.index(by_age[-1])
    with store.session() as s:
        assert s.count() == expected
        assert s.gaps("BTCUSDT", "1", report.wanted) == []
        assert s.series_info("BTCUSDT", "1").last_open == OPEN - timedelta(minutes=1)
        assert s.series_info("BTCUSDT", "1").last_sync_at is not None


def test_running_it_again_fetches_nothing(store):
    venue = FakeVenue(NOW_MS, holes=[(utc_to_ms(NOW - DAY), utc_to_ms(NOW - DAY) + 30 * 60_000)])
    sync = syncer(store, venue)
    sync.sync("BTCUSDT", "1", NOW - 2 * DAY, NOW)
    venue.requests.clear()
    report = sync.sync("BTCUSDT", "1", NOW - 2 * DAY, NOW)
    assert venue.requests == [] and report.ok and report.planned_bars == 0


def test_internal_gaps_are_filled_not_only_the_edges(store):
    """The reviewed sync fetched before the first and after the last bar only."""
    start = OPEN - DAY
    slots = list(opens("1", start, 1440))
    have = make_series("BTCUSDT", "1", start, 1440, missing=[*range(100, 160), 700, *range(1000, 1003)])
    store.write_bars(have[10:-10])
    venue = FakeVenue(NOW_MS)
    report = syncer(store, venue).sync("BTCUSDT", "1", start, ms_to_utc(slots[-1] + 60_000))
    assert report.ok and report.bars_stored == 10 + 60 + 1 + 3 + 10
    asked = sorted((r[2], r[3]) for r in venue.requests)
    assert asked == sorted([(slots[0], slots[9]), (slots[100], slots[159]), (slots[700], slots[700]),
                            (slots[1000], slots[1002]), (slots[1430], slots[1439])])
    with store.session() as s:
        assert s.gaps("BTCUSDT", "1") == [] and s.count() == 1440


def test_a_venue_hole_is_remembered_and_reported_not_refetched(store):
    hole = BarRange(utc_to_ms(OPEN - DAY), utc_to_ms(OPEN - DAY) + 90 * 60_000)
    venue = FakeVenue(NOW_MS, holes=[(hole.start_ms, hole.end_ms)])
    sync = syncer(store, venue)
    report = sync.sync("BTCUSDT", "1", NOW - 2 * DAY, NOW)
    assert report.ok and report.venue_holes == [hole]
    with store.session() as s:
        assert s.gaps("BTCUSDT", "1") == [hole]  # a gap in the data ...
        assert s.fillable_gaps("BTCUSDT", "1") == []  # ... that the venue cannot fill
        assert s.venue_holes("BTCUSDT", "1") == [hole]


@pytest.mark.parametrize("in_flight, requests", [(1, 7), (2, 8)])
def test_the_years_before_listing_cost_one_probe_not_thousands_of_pages(store, in_flight, requests):
    listing = OPEN - 3 * DAY
    venue = FakeVenue(NOW_MS, listing_ms=utc_to_ms(listing))
    report = syncer(store, venue, in_flight=in_flight).sync("BTCUSDT", "1", OPEN - 400 * DAY, NOW)
    assert report.ok and report.bars_stored == 3 * 1440
    # 4320 bars: four full pages and one with 320 bars, then one empty page and one probe; with
    # two requests in flight, the window after the empty one was already asked for (and is empty).
    assert report.requests == requests
    before = BarRange(utc_to_ms(OPEN - 400 * DAY), utc_to_ms(listing))
    with store.session() as s:
        assert s.venue_holes("BTCUSDT", "1") == [before]
        assert s.fillable_gaps("BTCUSDT", "1", report.wanted) == []


def test_transient_errors_are_retried_with_one_log_line_each(store):
    venue = FakeVenue(NOW_MS, faults=[TransientError("HTTP 503"), TransientError("connection reset")])
    sync = syncer(store, venue)
    with capture_logs() as logs:
        report = sync.sync("BTCUSDT", "60", NOW - 10 * DAY, NOW)
    assert report.ok and report.retries == 2 and report.bars_stored == 240
    retries = [e for e in logs if e["event"] == "sync.retry"]
    assert [e["attempt"] for e in retries] == [1, 2] and "HTTP 503" in retries[0]["error"]
    assert len(sync.waits) == 2 and all(0 <= w <= FAST.max_s for w in sync.waits)


def test_the_venues_reset_time_is_honoured(store):
    venue = FakeVenue(NOW_MS, faults=[RateLimited("retCode 10006", retry_after_s=7.5)])
    sync = syncer(store, venue)
    assert sync.sync("BTCUSDT", "60", NOW - DAY, NOW).ok
    assert sync.waits == [pytest.approx(7.5)]


def test_a_sync_that_keeps_failing_reports_failure_never_a_short_success(store):
    """The reviewed sync stopped at the first error and reported success with what it had."""
    venue = FakeVenue(NOW_MS)
    sync = syncer(store, venue)
    real = venue.fetch_klines

    def flaky(symbol, interval, start_ms, end_ms, limit=1000):
        # The two newest pages arrive, then the venue keeps failing. By window, not by call count:
        # two requests are on the wire at once, in no fixed order.
        if end_ms < utc_to_ms(OPEN) - 2000 * 60_000:
            raise TransientError("HTTP 502")
        return real(symbol, interval, start_ms, end_ms, limit)

    venue.fetch_klines = flaky  # type: ignore[method-assign]
    with capture_logs() as logs, pytest.raises(SyncFailed) as err:
        sync.sync("BTCUSDT", "1", OPEN - 4 * DAY, NOW)
    report = err.value.report
    assert not report.ok and report.pages_stored == 2 and report.bars_stored == 2000
    # The first failing window used up its attempts; the one on the wire with it may have retried too.
    assert FAST.attempts - 1 <= report.retries <= IN_FLIGHT * (FAST.attempts - 1) and "HTTP 502" in report.error
    assert [e["event"] for e in logs].count("sync.failed") == 1
    with store.session() as s:
        assert s.count() == 2000  # the pages that arrived were kept
        assert s.series_info("BTCUSDT", "1").last_sync_at is None
    # The next run resumes: it asks only for what is still missing.
    venue.fetch_klines = real  # type: ignore[method-assign]
    venue.requests.clear()
    report = sync.sync("BTCUSDT", "1", OPEN - 4 * DAY, NOW)
    assert report.ok and report.bars_stored == 4 * 1440 - 2000
    assert all(r[3] < utc_to_ms(OPEN) - 2000 * 60_000 for r in venue.requests)


def test_a_rejection_is_not_retried(store):
    venue = FakeVenue(NOW_MS, faults=[Rejected(10001, "params error")])
    with pytest.raises(SyncFailed) as err:
        syncer(store, venue).sync("BTCUSDT", "1", NOW - DAY, NOW)
    # No window was asked twice (a retry would ask the rejected one again, and get an answer).
    assert len(set(venue.requests)) == len(venue.requests) <= IN_FLIGHT and "10001" in err.value.report.error


def test_a_bar_too_recent_to_be_published_is_not_a_hole(store):
    # The venue has not published the last two closed minutes yet.
    last = utc_to_ms(OPEN)
    venue = FakeVenue(NOW_MS, holes=[(last - 2 * 60_000, last)])
    report = syncer(store, venue).sync("BTCUSDT", "1", NOW - DAY, NOW)
    assert report.ok and report.venue_holes == []
    assert report.unpublished == [BarRange(last - 2 * 60_000, last)]
    with store.session() as s:
        assert s.venue_holes("BTCUSDT", "1") == []
    venue.holes = []  # published now: the next run fetches them
    venue.requests.clear()
    report = syncer(store, venue).sync("BTCUSDT", "1", NOW - DAY, NOW)
    assert report.bars_stored == 2 and len(venue.requests) == 1


@pytest.mark.parametrize("interval,days,bars", [("D", 500, 500), ("M", 900, 29), ("W", 200, 28)])
def test_calendar_intervals(store, interval, days, bars):
    venue = FakeVenue(NOW_MS)
    report = syncer(store, venue).sync("ETHUSDT", interval, NOW - days * DAY, NOW)
    assert report.ok
    with store.session() as s:
        assert s.gaps("ETHUSDT", interval, report.wanted) == []
        assert abs(s.count() - bars) <= 1


def test_catch_up_fetches_the_tail_from_the_last_stored_bar(store):
    venue = FakeVenue(NOW_MS)
    sync = syncer(store, venue)
    sync.sync("BTCUSDT", "1", OPEN - DAY, OPEN - DAY / 2)
    venue.requests.clear()
    report = sync.catch_up("BTCUSDT", "1", lookback_start=OPEN - DAY / 4)  # the tail is older than the lookback
    assert report.ok and report.bars_stored == 720
    assert min(r[2] for r in venue.requests) >= utc_to_ms(OPEN - DAY / 2)


def test_catch_up_heals_a_recent_internal_hole_behind_a_fresh_last_bar(store):
    """A WebSocket outage leaves a hole while later bars keep arriving: the last bar is recent."""
    venue = FakeVenue(NOW_MS)
    sync = syncer(store, venue)
    sync.sync("BTCUSDT", "1", OPEN - DAY, OPEN)
    with store.session() as s:
        s.conn.execute(
            "DELETE FROM ohlcv WHERE open_time >= ? AND open_time < ?",
            [OPEN - DAY / 2, OPEN - DAY / 2 + timedelta(minutes=10)],
        )
        assert len(s.gaps("BTCUSDT", "1")) == 1
    venue.requests.clear()
    report = sync.catch_up("BTCUSDT", "1", lookback_start=OPEN - DAY)
    assert report.ok and report.bars_stored == 10
    with store.session() as s:
        assert s.gaps("BTCUSDT", "1") == []


def test_pages_are_fetched_ahead_while_a_unit_is_stored_and_never_more_than_a_unit_ahead(store):
    """Storing unit k waits until the first page of unit k+1 has been asked for (a sequential loop
    would never get there), and the fetcher is never more than one unit (plus the pages on the
    wire) ahead of the store: memory stays bounded whatever the range."""
    pages, per_unit = 6, 2  # 5,760 bars: three units of two pages
    asked = [threading.Event() for _ in range(pages + 1)]
    sessions: list[int] = []
    ahead: list[int] = []

    counting = threading.Lock()

    class CountingVenue(FakeVenue):
        started = 0

        def fetch_klines(self, *args, **kwargs):
            with counting:  # requests go two at a time
                n, CountingVenue.started = CountingVenue.started, CountingVenue.started + 1
            asked[n].set()
            return super().fetch_klines(*args, **kwargs)

    venue = CountingVenue(NOW_MS)
    real_session = store.session

    def session(*args, **kwargs):
        if kwargs.get("threads") == 1:  # a unit's session
            unit = len(sessions)
            following = (unit + 1) * per_unit  # the first page of the next unit
            if following < pages:
                assert asked[following].wait(5), f"page {following} was not asked for while unit {unit} was stored"
            ahead.append(len(venue.requests) - following)
            sessions.append(unit)
        return real_session(*args, **kwargs)

    store.session = session  # type: ignore[method-assign]
    report = syncer(store, venue, unit_bars=per_unit * 1000).sync("BTCUSDT", "1", OPEN - 4 * DAY, NOW)
    assert report.ok and report.bars_stored == 4 * 1440 and report.requests == pages == report.pages_stored
    assert sessions == [0, 1, 2]  # one session per unit (the last one also checks what is left)
    assert max(ahead) <= per_unit + IN_FLIGHT, ahead
    with real_session() as s:
        assert s.count() == 4 * 1440 and s.gaps("BTCUSDT", "1", report.wanted) == []
        assert s.series_info("BTCUSDT", "1").last_sync_at is not None


def test_bars_a_venue_sends_outside_the_asked_window_are_not_stored_with_it(store):
    """Each window keeps only its own closed bars: rows the venue adds around it (older ones,
    the still-open bar) are neither stored twice nor counted twice."""

    class SloppyVenue(FakeVenue):
        def fetch_klines(self, symbol, interval, start_ms, end_ms, limit=1000):
            answer = super().fetch_klines(symbol, interval, start_ms - 3 * 60_000, end_ms + 60_000, limit + 4)
            with self._lock:  # two requests at a time: record what was asked in place of the widened one
                self.requests.remove((symbol, interval, start_ms - 3 * 60_000, end_ms + 60_000, limit + 4))
                self.requests.append((symbol, interval, start_ms, end_ms, limit))
            return answer

    venue = SloppyVenue(NOW_MS)
    report = syncer(store, venue).sync("BTCUSDT", "1", OPEN - 2 * DAY, NOW)
    assert report.ok and report.bars_stored == 2 * 1440 and report.venue_holes == []
    with store.session() as s:
        assert s.count() == 2 * 1440 and s.gaps("BTCUSDT", "1", report.wanted) == []
        assert s.series_info("BTCUSDT", "1").last_open == OPEN - timedelta(minutes=1)  # not the open bar


def test_two_pages_are_on_the_wire_at_once_and_stored_in_order_whatever_answers_first(store):
    """The newest window is answered only once the next one has been asked for (a sequential
    sync would wait forever: the test's deadline fails it), and the next is answered first;
    the bars are still all stored, and progress only ever counts up."""
    second_asked = threading.Event()
    newest_last_open = utc_to_ms(OPEN) - 60_000  # the open bar is not asked for

    class OutOfOrder(FakeVenue):
        def fetch_klines(self, symbol, interval, start_ms, end_ms, limit=1000):
            if end_ms == newest_last_open:
                assert second_asked.wait(5), "the second window was not asked for while the first was on the wire"
            else:
                second_asked.set()
            return super().fetch_klines(symbol, interval, start_ms, end_ms, limit)

    venue = OutOfOrder(NOW_MS)
    done: list[int] = []
    report = syncer(store, venue, progress=lambda p: done.append(p.done_bars)).sync("BTCUSDT", "1", OPEN - 3 * DAY, NOW)
    assert report.ok and report.bars_stored == 3 * 1440 and report.requests == 5
    assert done == sorted(done) and done[-1] == 3 * 1440
    with store.session() as s:
        assert s.count() == 3 * 1440 and s.gaps("BTCUSDT", "1", report.wanted) == []


def test_one_request_at_a_time_when_asked(store):
    in_flight, most = [0], [0]
    lock = threading.Lock()

    class Counting(FakeVenue):
        def fetch_klines(self, *args, **kwargs):
            with lock:
                in_flight[0] += 1
                most[0] = max(most[0], in_flight[0])
            try:
                return super().fetch_klines(*args, **kwargs)
            finally:
                with lock:
                    in_flight[0] -= 1

    report = syncer(store, Counting(NOW_MS), in_flight=1).sync("BTCUSDT", "1", OPEN - 3 * DAY, NOW)
    assert report.ok and report.requests == 5 and most == [1]
    with pytest.raises(ValueError, match="in_flight"):
        syncer(store, Counting(NOW_MS), in_flight=0)


@pytest.mark.timeout(20)  # the other request was told to wait 60 s: only an interrupted backoff ends in time
def test_a_failed_page_ends_the_sync_while_the_other_request_waits_out_a_rate_limit(store):
    limited = threading.Event()
    newest_last_open = utc_to_ms(OPEN) - 60_000

    class RejectsNewestLimitsTheRest(FakeVenue):
        def fetch_klines(self, symbol, interval, start_ms, end_ms, limit=1000):
            if end_ms == newest_last_open:
                assert limited.wait(10)  # the other request is in its backoff now
                raise Rejected(10001, "params error")
            limited.set()
            raise RateLimited("too many visits", retry_after_s=60)

    sync = HistorySync(store, RejectsNewestLimitsTheRest(NOW_MS), now_ms=lambda: NOW_MS,
                       retry=RetryPolicy(attempts=3, max_hint_s=120))
    with pytest.raises(SyncFailed) as err:
        sync.sync("BTCUSDT", "1", OPEN - 3 * DAY, NOW)
    assert "10001" in err.value.report.error and err.value.report.bars_stored == 0
    assert [t.name for t in threading.enumerate() if t.name.startswith("sync-fetch-")] == []
