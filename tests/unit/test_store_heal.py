"""Heal: before/after counts, every fillable gap refetched, duplicates impossible (DATA-005)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from infra.bybit.errors import TransientError
from infra.store import HistoryStore
from infra.store.heal import heal
from infra.store.sync import HistorySync, RetryPolicy
from infra.store.testing import FakeVenue, make_series, opens
from messages.types import UTC, utc_to_ms

pytestmark = pytest.mark.timeout(30)

NOW = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
START = NOW - timedelta(days=2)


@pytest.fixture
def store(tmp_path):
    return HistoryStore(tmp_path / "sim.duckdb", lock_timeout_s=5)


def test_heal_refetches_every_gap_and_reports_before_and_after(store):
    slots = list(opens("1", START, 2000))
    store.write_bars(make_series("BTCUSDT", "1", START, 2000, missing=[*range(10, 20), 500, *range(1500, 1600)]))
    store.write_bars(make_series("ETHUSDT", "60", START, 40))  # complete: nothing to do
    venue = FakeVenue(utc_to_ms(NOW), holes=[(slots[1550], slots[1600])])  # half of one gap the venue lacks too
    reports = {(r.symbol, r.interval): r for r in heal(store, HistorySync(store, venue, now_ms=lambda: venue.now_ms))}

    btc = reports[("BTCUSDT", "1")]
    assert (btc.before.bars, btc.before.gaps, btc.before.missing_bars, btc.before.duplicates) == (1889, 3, 111, 0)
    assert (btc.after.bars, btc.after.gaps, btc.after.missing_bars, btc.after.duplicates) == (1950, 0, 0, 0)
    assert btc.refetched_bars == 61 and btc.after.venue_hole_bars == 50 and btc.ok
    eth = reports[("ETHUSDT", "60")]
    assert eth.before == eth.after and eth.refetched_bars == 0 and eth.ok
    assert all(r[0] == "BTCUSDT" for r in venue.requests)
    with store.session() as s:
        assert s.series_info("BTCUSDT", "1").last_heal_at is not None


def test_a_heal_that_cannot_reach_the_venue_says_so(store):
    store.write_bars(make_series("BTCUSDT", "1", START, 100, missing=[50]))
    venue = FakeVenue(utc_to_ms(NOW), faults=[TransientError("HTTP 503")] * 3)
    sync = HistorySync(store, venue, now_ms=lambda: venue.now_ms, sleep=lambda s: None,
                       retry=RetryPolicy(attempts=3, initial_s=0.01, max_s=0.01))
    (report,) = heal(store, sync)
    assert not report.ok and "HTTP 503" in report.error
    assert report.after.gaps == 1
    with store.session() as s:
        assert s.series_info("BTCUSDT", "1").last_heal_at is None
