"""Venue kline rows straight to columns: the same bars as ClosedBar.from_rest_row, or None (row-by-row path)."""

from __future__ import annotations

from datetime import datetime

import pytest

from infra.store import HistoryStore
from infra.store.batch import build_batch, table_from_rows
from infra.store.sync import HistorySync, RetryPolicy, SyncFailed
from infra.store.testing import FakeVenue, bar_row, make_series
from messages.market import BarSource, ClosedBar
from messages.types import UTC, utc_to_ms

pytestmark = pytest.mark.timeout(30)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
GOOD = ["1704067200000", "42000.5", "42100", "41950.25", "42050", "12.345", "518790.1234"]


def test_rows_give_exactly_the_table_closed_bars_give():
    for interval, start in (("1", T0), ("60", T0), ("D", T0), ("W", datetime(2024, 1, 1, tzinfo=UTC))):
        bars = make_series("ETHUSDT", interval, start, 30)
        rows = [bar_row(b) for b in reversed(bars)]  # newest first, as the venue sends them
        fast = table_from_rows("ETHUSDT", interval, rows)
        slow = build_batch([ClosedBar.from_rest_row("ETHUSDT", interval, r) for r in rows]).table
        assert fast is not None, interval
        assert fast.equals(slow), interval
        assert set(fast["source"].to_pylist()) == {BarSource.REST.value}


@pytest.mark.parametrize(
    "why, row",
    [
        ("off the minute grid", ["1704067200001", *GOOD[1:]]),
        ("not a number", ["1704067200000", "abc", *GOOD[2:]]),
        ("NaN", ["1704067200000", "NaN", *GOOD[2:]]),
        ("infinite", [*GOOD[:5], "Infinity", GOOD[6]]),
        ("zero price", ["1704067200000", "0", *GOOD[2:]]),
        ("negative volume", [*GOOD[:5], "-1", GOOD[6]]),
        ("high below close", ["1704067200000", "42000.5", "42000", "41950.25", "42050", "1", "1"]),
        ("low above open", ["1704067200000", "42000.5", "42100", "42001", "42050", "1", "1"]),
        ("too many decimals for the column", [*GOOD[:6], "0.0000000000000000001"]),
        ("too large for the column", [*GOOD[:5], "1" + "0" * 21, GOOD[6]]),
        ("a number, not a string", [1704067200000, *GOOD[1:]]),
        ("a short row", GOOD[:6]),
        ("a negative start", ["-60000", *GOOD[1:]]),
    ],
)
def test_a_page_with_any_bad_row_goes_row_by_row(why, row):
    assert table_from_rows("BTCUSDT", "1", [GOOD, row]) is None, why


def test_the_same_bar_twice_goes_row_by_row_and_monthly_bars_always_do():
    assert table_from_rows("BTCUSDT", "1", [GOOD, GOOD]) is None
    month = ["1704067200000", *GOOD[1:]]  # 2024-01-01, a month start
    assert table_from_rows("BTCUSDT", "M", [month]) is None
    assert table_from_rows("BTCUSDT", "1", []).num_rows == 0


NOW = datetime(2024, 3, 10, 12, 30, 30, tzinfo=UTC)


class BadRowVenue(FakeVenue):
    """Rows as the venue sends them, with one row replaced."""

    def __init__(self, *args, bad: list, **kwargs):
        super().__init__(*args, **kwargs)
        self.bad = bad

    def fetch_kline_rows(self, *args, **kwargs):
        rows = super().fetch_kline_rows(*args, **kwargs)
        return [self.bad, *rows[1:]] if rows else rows


class BarsOnly:
    """A source that only parses (no raw rows): the sync still works, row by row."""

    def __init__(self, venue: FakeVenue):
        self.venue = venue

    def fetch_klines(self, *args, **kwargs):
        return self.venue.fetch_klines(*args, **kwargs)


def _sync(tmp_path, source):
    store = HistoryStore(tmp_path / "h.duckdb", lock_timeout_s=5)
    sync = HistorySync(store, source, now_ms=lambda: utc_to_ms(NOW), sleep=lambda s: None,
                       retry=RetryPolicy(attempts=2, initial_s=0.01, max_s=0.01))
    return store, sync


def test_a_source_without_rows_is_synced_through_closed_bars(tmp_path):
    store, sync = _sync(tmp_path, BarsOnly(FakeVenue(utc_to_ms(NOW))))
    report = sync.sync("BTCUSDT", "5", datetime(2024, 3, 1, tzinfo=UTC), NOW)
    assert report.ok and report.bars_stored == report.planned_bars > 1000
    with store.session() as s:
        assert s.gaps("BTCUSDT", "5", report.wanted) == []


def test_a_value_the_column_cannot_hold_sets_that_bar_aside_and_stores_the_rest(tmp_path):
    venue = FakeVenue(utc_to_ms(NOW))
    newest = venue.fetch_klines("BTCUSDT", "60", 0, utc_to_ms(NOW), 2)[1]  # the newest closed bar
    bad = bar_row(newest)
    bad[6] = "0.0000000000000000001"
    store, sync = _sync(tmp_path, BadRowVenue(utc_to_ms(NOW), bad=bad))
    # The first row the venue sends is the open bar, replaced here by the closed one with a bad turnover.
    with pytest.raises(SyncFailed) as failed:
        sync.sync("BTCUSDT", "60", datetime(2024, 3, 5, tzinfo=UTC), NOW)
    with store.session() as s:
        stored = s.count("BTCUSDT", "60")
        assert s.bars("BTCUSDT", "60")[-1].open_time < newest.open_time
    assert stored == failed.value.report.bars_stored > 0  # every other bar stored; that one is still missing


def test_a_row_that_does_not_parse_fails_the_sync_as_the_venues_malformed_answer(tmp_path):
    store, sync = _sync(tmp_path, BadRowVenue(utc_to_ms(NOW), bad=["1709985600000", "x", "1", "1", "1", "1", "1"]))
    with pytest.raises(SyncFailed) as failed:
        sync.sync("BTCUSDT", "1", datetime(2024, 3, 9, tzinfo=UTC), NOW)
    assert "MalformedResponse" in failed.value.report.error and "kline row" in failed.value.report.error
    with store.session() as s:  # the page was refused as a whole: nothing of it stored
        assert s.count() == 0
