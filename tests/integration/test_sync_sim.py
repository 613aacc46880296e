"""Sync against the simulator through the real gateway and pybit (DATA-006, DATA-007)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from structlog.testing import capture_logs

from infra.bybit import Gateway
from infra.config import ExchangeConfig, TradingMode, Venue
from infra.store import BarRange, HistoryStore
from infra.store.sync import HistorySync, RetryPolicy, SyncFailed
from messages.types import ms_to_utc

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

MIN = 60_000
QUICK = RetryPolicy(attempts=5, initial_s=0.05, max_s=0.3, max_hint_s=2.0)


class Counting:
    """The gateway, counting the pages asked for."""

    def __init__(self, gateway: Gateway):
        self.gateway = gateway
        self.calls: list[tuple[int, int]] = []

    def fetch_klines(self, symbol, interval, start_ms, end_ms, limit=1000):
        self.calls.append((start_ms, end_ms))
        return self.gateway.fetch_klines(symbol, interval, start_ms, end_ms, limit)


@pytest.fixture
def gateway(sim, sim_creds):
    gw = Gateway.create(
        urls=sim.urls,
        credentials=sim_creds,
        venue=Venue.SIM,
        trading_mode=TradingMode.PAPER,
        live_confirmed=False,
        exchange=ExchangeConfig(rest_timeout_s=Decimal("1"), rest_connect_timeout_s=Decimal("0.5")),
    )
    yield Counting(gw)
    gw.close()


@pytest.fixture
def store(tmp_path):
    return HistoryStore(tmp_path / "sim.duckdb", lock_timeout_s=5)


def make_sync(store, gateway, sim, **kw):
    kw.setdefault("retry", QUICK)
    return HistorySync(store, gateway, now_ms=sim.clock.now_ms, **kw)


def test_a_sync_across_a_venue_hole_and_an_internal_gap_leaves_no_fillable_gap(sim, gateway, store):
    now = sim.clock.now_ms()
    start, end = ms_to_utc(now - 3 * 1440 * MIN), ms_to_utc(now)
    hole = BarRange(now - 2 * 1440 * MIN, now - 2 * 1440 * MIN + 45 * MIN)
    sim.add_history_hole("BTCUSDT", hole.start_ms, hole.end_ms - 1, interval="1")  # the sim's end is inclusive
    sync = make_sync(store, gateway, sim)
    first = sync.sync("BTCUSDT", "1", start, end)
    assert first.ok and first.venue_holes == [hole]
    # A crash left an internal gap (rows lost); the next sync must find and fill it.
    lost = BarRange(now - 1440 * MIN, now - 1440 * MIN + 300 * MIN)
    with store.session() as s:
        before = s.bars("BTCUSDT", "1", lost)
        s.conn.execute("DELETE FROM ohlcv WHERE open_time >= epoch_ms(?::BIGINT) AND open_time < epoch_ms(?::BIGINT)",
                       [lost.start_ms, lost.end_ms])
        assert s.fillable_gaps("BTCUSDT", "1", first.wanted) == [lost]
    gateway.calls.clear()
    second = sync.sync("BTCUSDT", "1", start, end)
    assert second.ok and second.bars_stored == 300 and gateway.calls == [(lost.start_ms, lost.end_ms - MIN)]
    with store.session() as s:
        assert s.fillable_gaps("BTCUSDT", "1", first.wanted) == []
        assert s.gaps("BTCUSDT", "1", first.wanted) == [hole]
        assert s.venue_holes("BTCUSDT", "1") == [hole]
        assert s.count("BTCUSDT", "1") == 3 * 1440 - 45
        assert s.bars("BTCUSDT", "1", lost) == before  # the venue's bars, exactly as before


def test_re_running_a_sync_fetches_nothing(sim, gateway, store):
    now = sim.clock.now_ms()
    sync = make_sync(store, gateway, sim)
    sync.sync("ETHUSDT", "5", ms_to_utc(now - 10 * 1440 * MIN), ms_to_utc(now))
    gateway.calls.clear()
    again = sync.sync("ETHUSDT", "5", ms_to_utc(now - 10 * 1440 * MIN), ms_to_utc(now))
    assert again.ok and again.requests == 0 and gateway.calls == []


def test_5xx_answers_are_retried_and_the_sync_completes(sim, gateway, store):
    now = sim.clock.now_ms()
    sim.faults.http_error(503, count=2, path="/v5/market/kline")
    with capture_logs() as logs:
        report = make_sync(store, gateway, sim).sync("BTCUSDT", "1", ms_to_utc(now - 1440 * MIN), ms_to_utc(now))
    assert report.ok and report.retries == 2 and report.bars_stored == 1440
    # One line per retry; per window (requests go two at a time) the attempts count up from 1.
    retries = [e for e in logs if e["event"] == "sync.retry"]
    for window in {e["window"] for e in retries}:
        attempts = [e["attempt"] for e in retries if e["window"] == window]
        assert attempts == list(range(1, len(attempts) + 1))
    assert len(retries) == 2


def test_dropped_connections_are_retried_and_the_sync_completes(sim, gateway, store):
    now = sim.clock.now_ms()
    backoffs: list[float] = []

    def sleep(seconds: float) -> None:
        # The venue comes back during the second backoff: by the test's hand, not a
        # wall-clock window that jittered backoff could outrun.
        backoffs.append(seconds)
        if len(backoffs) == 2:
            sim.faults.clear()

    sync = make_sync(store, gateway, sim, retry=RetryPolicy(attempts=8, initial_s=0.1, max_s=0.3), sleep=sleep)
    sim.faults.refuse_connections(600)  # the gateway has no pooled connection yet: every connect is cut
    report = sync.sync("BTCUSDT", "1", ms_to_utc(now - 2 * 1440 * MIN), ms_to_utc(now))
    # Each retry waited its backoff first; two requests are on the wire at once, so the venue's
    # return may find more than two backoffs made.
    assert report.ok and report.retries == len(backoffs) >= 2
    with store.session() as s:
        assert s.count("BTCUSDT", "1") == 2 * 1440
        assert s.gaps("BTCUSDT", "1", report.wanted) == []


def test_an_ip_ban_stops_the_sync_with_a_failure(sim, gateway, store):
    """A 403 is a ban of minutes: no retry storm, a clear failure."""
    now = sim.clock.now_ms()
    sim.faults.ip_ban(5)
    with pytest.raises(SyncFailed) as err:
        make_sync(store, gateway, sim).sync("BTCUSDT", "1", ms_to_utc(now - 1440 * MIN), ms_to_utc(now))
    assert "IpBanned" in err.value.report.error and err.value.report.retries == 0


def test_a_venue_that_stays_down_makes_the_sync_fail_not_succeed_short(sim, gateway, store):
    now = sim.clock.now_ms()
    sync = make_sync(store, gateway, sim)
    sync.sync("BTCUSDT", "1", ms_to_utc(now - 1440 * MIN), ms_to_utc(now))  # one day is stored
    sim.faults.http_error(502, seconds=30, path="/v5/market/kline")
    with pytest.raises(SyncFailed) as err:
        sync.sync("BTCUSDT", "1", ms_to_utc(now - 3 * 1440 * MIN), ms_to_utc(now))
    report = err.value.report
    # Every attempt of the window that failed was made (the other one on the wire may have had fewer).
    assert not report.ok and report.retries >= QUICK.attempts - 1 and "502" in report.error
    assert report.remaining  # what is missing is said, not hidden
    sim.faults.clear()
    resumed = sync.sync("BTCUSDT", "1", ms_to_utc(now - 3 * 1440 * MIN), ms_to_utc(now))
    assert resumed.ok and resumed.bars_stored == 2 * 1440


def test_the_still_open_bar_is_never_stored(sim, gateway, store):
    sim.clock.advance(30)  # mid-minute: the current bar is open
    now = sim.clock.now_ms()
    report = make_sync(store, gateway, sim).sync("BTCUSDT", "1", ms_to_utc(now - 60 * MIN), ms_to_utc(now + 3600_000))
    with store.session() as s:
        last = s.series_info("BTCUSDT", "1").last_open
    assert report.ok and last == ms_to_utc(now - now % MIN - MIN)
    assert ms_to_utc(now) - last < timedelta(minutes=2)
