"""Gap detection in SQL (DATA-003) with an exact step on every interval (DATA-004)."""

from __future__ import annotations

import tracemalloc
from datetime import datetime

import pytest

from infra.store import BarRange, HistoryStore
from infra.store.ranges import count_bars
from infra.store.testing import fill_minutes_sql, make_series, opens
from messages.types import INTERVALS, UTC, next_open_ms

pytestmark = pytest.mark.timeout(30)

T0 = datetime(2023, 1, 2, tzinfo=UTC)  # a Monday, so the W series is aligned too


@pytest.fixture
def store(tmp_path):
    return HistoryStore(tmp_path / "sim.duckdb", lock_timeout_s=5)


def planted(interval: str, count: int, missing: list[int]) -> tuple[list[int], list[BarRange]]:
    """Slot open times, and the gap ranges that leaving out `missing` must produce."""
    slots = list(opens(interval, T0, count))
    expected: list[BarRange] = []
    for i in sorted(missing):
        r = BarRange(slots[i], next_open_ms(interval, slots[i]))
        if expected and expected[-1].end_ms == r.start_ms:
            expected[-1] = BarRange(expected[-1].start_ms, r.end_ms)
        else:
            expected.append(r)
    return slots, expected


@pytest.mark.parametrize(
    "interval,count,missing",
    [
        ("1", 5000, [1, 2, 3, 777, 4998]),  # a run of three, a single, one just before the end
        ("60", 2000, [100, 101, 1500]),
        ("D", 800, [1, 365, 366, 367, 798]),
        ("W", 200, [10, 150]),
        ("M", 60, [1, 12, 25, 26]),  # slot 12 is February 2024, a leap month
    ],
)
def test_finds_exactly_the_planted_gaps(store, interval, count, missing):
    _, expected = planted(interval, count, missing)
    store.write_bars(make_series("BTCUSDT", interval, T0, count, missing=missing))
    with store.session() as s:
        found = s.gaps("BTCUSDT", interval)
    assert found == expected
    assert sum(g.bars(interval) for g in found) == len(missing)


@pytest.mark.parametrize("interval", INTERVALS)
def test_a_complete_series_has_no_gap_on_any_interval(store, interval):
    """A fixed tolerance (the reviewed design's 5 %, or its "+1 minute" fix) misjudges months of 28..31 days."""
    count = {"M": 40, "W": 120}.get(interval, 3000)
    store.write_bars(make_series("ETHUSDT", interval, T0, count))
    with store.session() as s:
        assert s.gaps("ETHUSDT", interval) == []


@pytest.mark.parametrize("interval", INTERVALS)
def test_one_missing_bar_is_a_gap_on_every_interval(store, interval):
    """The reviewed 5 % tolerance let up to 72 minutes go unseen on daily data."""
    count = {"M": 40, "W": 120}.get(interval, 300)
    slots, expected = planted(interval, count, [count // 2])
    store.write_bars(make_series("ETHUSDT", interval, T0, count, missing=[count // 2]))
    with store.session() as s:
        assert s.gaps("ETHUSDT", interval) == expected


def test_gaps_of_one_series_ignore_the_others(store):
    store.write_bars(make_series("BTCUSDT", "1", T0, 100, missing=[50]))
    store.write_bars(make_series("ETHUSDT", "1", T0, 100, missing=[10, 20]))
    store.write_bars(make_series("BTCUSDT", "5", T0, 100))
    with store.session() as s:
        assert len(s.gaps("BTCUSDT", "1")) == 1
        assert len(s.gaps("ETHUSDT", "1")) == 2
        assert s.gaps("BTCUSDT", "5") == []


def test_within_a_range_the_edges_are_gaps_too(store):
    slots = list(opens("60", T0, 100))
    store.write_bars(make_series("BTCUSDT", "60", T0, 100, missing=[40])[20:80])  # slots 20..80, minus 40
    wanted = BarRange(slots[10], slots[90])
    with store.session() as s:
        found = s.gaps("BTCUSDT", "60", wanted)
        assert found == [BarRange(slots[10], slots[20]), BarRange(slots[40], slots[41]), BarRange(slots[81], slots[90])]
        empty = BarRange(slots[0], slots[5])
        assert s.gaps("ETHUSDT", "60", empty) == [empty]
        assert s.gaps("BTCUSDT", "60", BarRange(slots[21], slots[30])) == []


def test_known_venue_holes_are_not_fillable(store):
    slots = list(opens("1", T0, 100))
    store.write_bars(make_series("BTCUSDT", "1", T0, 100, missing=[10, 11, 12, 60]))
    with store.session() as s:
        s.add_venue_holes("BTCUSDT", "1", [BarRange(slots[10], slots[12])])
        assert s.fillable_gaps("BTCUSDT", "1") == [BarRange(slots[12], slots[13]), BarRange(slots[60], slots[61])]
        s.add_venue_holes("BTCUSDT", "1", [BarRange(slots[12], slots[13])])
        assert s.venue_holes("BTCUSDT", "1") == [BarRange(slots[10], slots[13])]  # merged
        assert s.fillable_gaps("BTCUSDT", "1") == [BarRange(slots[60], slots[61])]


def test_only_gap_rows_come_back_to_python(store):
    """The reviewed design fetched every timestamp (about 10 MB for 100k bars) before looping."""
    with store.session() as s:
        fill_minutes_sql(s, "BTCUSDT", T0, 100_000, missing=[5, 50_000])
        s.gaps("BTCUSDT", "1")  # warm up: first-use allocations are not the scan's
        tracemalloc.start()
        try:
            found = s.gaps("BTCUSDT", "1")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert len(found) == 2
    assert peak < 256 * 1024, f"gap scan allocated {peak} bytes of Python memory"


def test_count_bars_agrees_with_the_calendar():
    start = datetime(2024, 1, 1, tzinfo=UTC)
    slots = list(opens("M", start, 13))
    assert count_bars("M", slots[0], slots[12]) == 12


# --- edges of the series and of the range -------------------------------------------------


def test_an_empty_series_has_no_gap_and_a_range_over_it_is_one_gap(store):
    slots = list(opens("60", T0, 10))
    store.write_bars(make_series("ETHUSDT", "60", T0, 10))  # another series in the file
    with store.session() as s:
        assert s.gaps("BTCUSDT", "60") == []
        assert s.fillable_gaps("BTCUSDT", "60") == []
        assert s.gaps("BTCUSDT", "60", BarRange(slots[2], slots[5])) == [BarRange(slots[2], slots[5])]


def test_range_bounds_off_the_grid(store):
    """A range starting inside a bar skips that bar (it opened before the range); one ending inside
    a bar keeps that bar (it opens inside the range), and a gap reaching the end ends at the range's end."""
    slots = list(opens("60", T0, 20))
    store.write_bars(make_series("BTCUSDT", "60", T0, 20, missing=[3, 4, 12, 13]))
    half = (slots[1] - slots[0]) // 2
    with store.session() as s:
        assert s.gaps("BTCUSDT", "60", BarRange(slots[2] + half, slots[13] + half)) == [
            BarRange(slots[3], slots[5]), BarRange(slots[12], slots[13] + half)]
        # Slot 3 opens before the range: the first missing bar that opens inside it is slot 4.
        assert s.gaps("BTCUSDT", "60", BarRange(slots[3] + half, slots[6])) == [BarRange(slots[4], slots[5])]
        # No bar opens inside [slot 3 + half, slot 4): nothing can be missing there.
        assert s.gaps("BTCUSDT", "60", BarRange(slots[3] + half, slots[4])) == []


def test_a_range_outside_the_stored_bars_or_inside_one_gap_is_one_gap(store):
    slots = list(opens("15", T0, 60))
    series = make_series("BTCUSDT", "15", T0, 60)
    store.write_bars(series[10:20] + series[40:50])  # slots 10..19 and 40..49
    with store.session() as s:
        before, after, inside = BarRange(slots[0], slots[10]), BarRange(slots[50], slots[59]), BarRange(slots[22], slots[30])
        assert s.gaps("BTCUSDT", "15", before) == [before]
        assert s.gaps("BTCUSDT", "15", after) == [after]
        assert s.gaps("BTCUSDT", "15", inside) == [inside]
        assert s.gaps("BTCUSDT", "15") == [BarRange(slots[20], slots[40])]
        assert s.gaps("BTCUSDT", "15", BarRange(slots[5], slots[55])) == [
            BarRange(slots[5], slots[10]), BarRange(slots[20], slots[40]), BarRange(slots[50], slots[55])]


def test_a_single_bar_has_no_gap_and_bounds_a_range(store):
    slots = list(opens("D", T0, 10))
    store.write_bars(make_series("BTCUSDT", "D", T0, 10)[4:5])
    with store.session() as s:
        assert s.gaps("BTCUSDT", "D") == []
        assert s.gaps("BTCUSDT", "D", BarRange(slots[2], slots[8])) == [
            BarRange(slots[2], slots[4]), BarRange(slots[5], slots[8])]


def test_months_within_a_range_use_calendar_months(store):
    """February (28 or 29 days) and 31-day months in one range: every step is one calendar month."""
    slots = list(opens("M", T0, 30))  # 2023-02 .. 2025-07
    store.write_bars(make_series("BTCUSDT", "M", T0, 30, missing=[12, 13, 24]))  # 2024-02 (leap), 2024-03, 2025-02
    with store.session() as s:
        assert s.gaps("BTCUSDT", "M") == [BarRange(slots[12], slots[14]), BarRange(slots[24], slots[25])]
        mid_jan = slots[11] + 14 * 86_400_000  # inside January 2024
        assert s.gaps("BTCUSDT", "M", BarRange(mid_jan, slots[29])) == [
            BarRange(slots[12], slots[14]), BarRange(slots[24], slots[25])]
        assert s.gaps("BTCUSDT", "M", BarRange(slots[13], slots[13] + 86_400_000)) == [
            BarRange(slots[13], slots[13] + 86_400_000)]


def test_venue_holes_cut_gaps_within_a_range_too(store):
    slots = list(opens("5", T0, 120))
    store.write_bars(make_series("BTCUSDT", "5", T0, 100, missing=list(range(30, 50))))
    with store.session() as s:
        s.add_venue_holes("BTCUSDT", "5", [BarRange(slots[35], slots[40]), BarRange(slots[90], slots[95])])
        wanted = BarRange(slots[32], slots[110])  # past the last stored bar (slot 99)
        assert s.gaps("BTCUSDT", "5", wanted) == [BarRange(slots[32], slots[50]), BarRange(slots[100], slots[110])]
        assert s.fillable_gaps("BTCUSDT", "5", wanted) == [
            BarRange(slots[32], slots[35]), BarRange(slots[40], slots[50]), BarRange(slots[100], slots[110])]
        assert s.fillable_gaps("BTCUSDT", "5") == [BarRange(slots[30], slots[35]), BarRange(slots[40], slots[50])]
