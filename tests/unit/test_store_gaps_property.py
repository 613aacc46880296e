"""`gaps` and `fillable_gaps` against a plain Python reference, on generated series (DATA-003/004).

The reference does not share the store's method: it walks every bar slot
of the range one by one (`next_open_ms`, so months are calendar months)
and reports the runs of slots with no stored bar. The store finds gaps
from neighbouring stored bars in SQL. Any future rewrite of the scan (a
cheaper plan, a coverage table, bucketed counts) must keep agreeing with
this walk on every interval, with and without a range, with range bounds
on or off the bar grid, next to other series in the same file, and with
venue holes cut out.

Derandomized (the same examples every run), so a failure reproduces. About 10 s on a quiet
2-core machine.
"""

from __future__ import annotations

import itertools
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.store import BarRange, HistoryStore
from infra.store.gaps import RAGGED_SHARE, find_gaps
from infra.store.ranges import ceil_open_ms, prev_open_ms
from infra.store.testing import make_bar
from messages.types import INTERVALS, UTC, interval_ms, next_open_ms, utc_to_ms

pytestmark = pytest.mark.timeout(120)

T0_MS = utc_to_ms(datetime(2023, 1, 2, tzinfo=UTC))  # a Monday: on the grid of every interval but M
BY_DAY = [i for i in INTERVALS if i not in ("W", "M")]  # the intervals the day-bucket plan serves
MAX_SLOTS = 40  # sparse series; dense ones span up to two days and a bit (see `max_slots`)
_symbols = (f"P{i}USDT" for i in itertools.count())  # every example its own series in the shared file


def slot_ms(interval: str, i: int) -> int:
    """Open time of bar slot `i` (negative: before the first) of `interval`, counted from T0."""
    t = ceil_open_ms(interval, T0_MS)
    step = interval_ms(interval)
    if step is not None:
        return t + i * step
    for _ in range(i):
        t = next_open_ms(interval, t)
    for _ in range(-i):
        t = prev_open_ms(interval, t)
    return t


def reference_gaps(interval: str, present: set[int], within: BarRange | None,
                   holes: list[BarRange] = ()) -> list[BarRange]:
    """Walk every slot; a run of slots with no bar (and not in a venue hole) is one gap.

    Without a range: from the first to the last stored bar. With one: every
    slot opening inside it; a gap reaching the range's end ends at the end
    (an end off the grid stays where it is, as the range says).
    """
    if within is None:
        if not present:
            return []
        t, end = min(present), next_open_ms(interval, max(present))
    else:
        t, end = ceil_open_ms(interval, within.start_ms), within.end_ms
    out: list[BarRange] = []
    start = None
    while t < end:
        missing = t not in present and not any(h.start_ms <= t < h.end_ms for h in holes)
        if missing and start is None:
            start = t
        elif not missing and start is not None:
            out.append(BarRange(start, t))
            start = None
        t = next_open_ms(interval, t)
    if start is not None:
        out.append(BarRange(start, min(t, end)))
    return out


def max_slots(interval: str) -> int:
    """Enough slots for whole UTC days (the day-bucket plan's clean days) where a day holds many bars."""
    step = interval_ms(interval)
    return MAX_SLOTS if step is None or step >= 86_400_000 else min(2 * 86_400_000 // step + 10, 3000)


@st.composite
def bound(draw, interval: str, count: int) -> int:
    """A range bound: a slot a little outside to a little past the series, on the grid or inside a bar."""
    i = draw(st.integers(-3, count + 3))
    at, nxt = slot_ms(interval, i), slot_ms(interval, i + 1)
    offset = draw(st.sampled_from([0, 0, 1, (nxt - at) // 2, nxt - at - 1]))
    return at + offset


@st.composite
def cases(draw):
    interval = draw(st.sampled_from(INTERVALS))
    if draw(st.booleans()):  # sparse: any subset of a few slots
        count = draw(st.integers(0, MAX_SLOTS))
        present = draw(st.sets(st.integers(0, count - 1), max_size=count)) if count else set()
    else:  # dense: long, with a few missing runs (whole days complete, as real series mostly are)
        count = draw(st.integers(1, max_slots(interval)))
        present = set(range(draw(st.integers(0, count - 1)), count))  # the series may start mid-day
        for _ in range(draw(st.integers(0, 4))):
            first = draw(st.integers(0, count - 1))
            present -= set(range(first, first + draw(st.integers(1, 30))))
    within = None
    if draw(st.booleans()):
        a, b = draw(bound(interval, count)), draw(bound(interval, count))
        if a != b:
            within = BarRange(min(a, b), max(a, b))
    holes = []
    for _ in range(draw(st.integers(0, 3))):
        first = draw(st.integers(-2, count + 1))
        holes.append(BarRange(slot_ms(interval, first), slot_ms(interval, first + draw(st.integers(1, 6)))))
    # Another series in the same file, bars where ours has none: a scan that leaks across series shows.
    other = draw(st.sampled_from([None, "interval", "symbol"]))
    return interval, sorted(present), within, holes, other


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = HistoryStore(tmp_path_factory.mktemp("gaps_property") / "sim.duckdb", lock_timeout_s=5)
    yield s
    s.close()


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=cases())
def test_gaps_match_a_slot_by_slot_walk(store, case):
    interval, slots, within, holes, other = case
    symbol = next(_symbols)
    present = {slot_ms(interval, i) for i in slots}
    bars = [make_bar(symbol, interval, t, seq=k) for k, t in enumerate(sorted(present))]
    if other is not None:
        # A neighbouring series in the same file: another symbol with bars exactly where ours has
        # none (and a margin around), or our symbol on another interval with every slot.
        o_symbol, o_interval = (symbol, "D" if interval != "D" else "60") if other == "interval" else (next(_symbols), interval)
        lo = slot_ms(o_interval, -5)
        hi = slot_ms(interval, len(slots) and max(slots) + 5) if o_interval == interval else slot_ms(o_interval, MAX_SLOTS)
        t, k = lo, 0
        while t < hi:
            if t not in present or o_interval != interval:
                bars.append(make_bar(o_symbol, o_interval, t, seq=k))
            t, k = next_open_ms(o_interval, t), k + 1
    with store.session() as s:
        s.write_bars(bars)
        if holes:
            s.add_venue_holes(symbol, interval, holes)
        expected = reference_gaps(interval, present, within)
        assert s.gaps(symbol, interval, within) == expected
        assert s.fillable_gaps(symbol, interval, within) == reference_gaps(interval, present, within, holes)
        # Every plan, whichever the interval or the share of ragged days would pick.
        assert find_gaps(s.conn, symbol, interval, within, by_day=False) == expected
        if interval in BY_DAY:
            assert find_gaps(s.conn, symbol, interval, within, by_day=True, ragged_share=1.0) == expected
            assert find_gaps(s.conn, symbol, interval, within, by_day=True, ragged_share=-1.0) == expected


@pytest.mark.parametrize("interval", ["1", "M"])
def test_the_reference_itself_on_a_hand_worked_case(interval):
    """The reference is only as good as its own reading of the rules; pin it on one case worked by hand."""
    s = [slot_ms(interval, i) for i in range(8)]
    present = {s[0], s[1], s[4], s[7]}
    assert reference_gaps(interval, present, None) == [BarRange(s[2], s[4]), BarRange(s[5], s[7])]
    # A range from inside slot 0 to inside slot 6: slot 0 opens before it, slot 6 is cut at the range's end.
    within = BarRange(s[0] + 1, s[6] + 1)
    assert reference_gaps(interval, present, within) == [BarRange(s[2], s[4]), BarRange(s[5], s[6] + 1)]
    assert reference_gaps(interval, present, within, [BarRange(s[3], s[5])]) == [
        BarRange(s[2], s[3]), BarRange(s[5], s[6] + 1)]
    assert reference_gaps(interval, set(), BarRange(s[0] + 1, s[1])) == []  # no bar opens inside


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(interval=st.sampled_from(BY_DAY), data=st.data())
def test_both_plans_agree_with_bars_off_the_grid(store, interval, data):
    """Only raw SQL can store a bar off its grid (`ClosedBar` refuses it), but the answer for such a
    file must not depend on the plan: the day-bucket plan must treat its day as ragged (DATA-004)."""
    symbol = next(_symbols)
    count = data.draw(st.integers(1, max_slots(interval)))
    missing = data.draw(st.sets(st.integers(0, count - 1), max_size=5))
    step = interval_ms(interval)
    off = data.draw(st.lists(st.tuples(st.integers(-2, count + 1), st.integers(1, step - 1)), min_size=1, max_size=4))
    wanted = None
    if data.draw(st.booleans()):
        a, b = data.draw(bound(interval, count)), data.draw(bound(interval, count))
        wanted = BarRange(min(a, b), max(a, b)) if a != b else None
    with store.session() as s:
        s.write_bars([make_bar(symbol, interval, slot_ms(interval, i), seq=i) for i in range(count) if i not in missing])
        for i, late_by in off:
            s.conn.execute(
                "INSERT OR REPLACE INTO ohlcv VALUES (?, ?, epoch_ms(?::BIGINT), 100, 101, 99, 100.5, 1, 100, 'rest')",
                [symbol, interval, slot_ms(interval, i) + late_by],
            )
        ordered = find_gaps(s.conn, symbol, interval, wanted, by_day=False)
        for share in (1.0, -1.0, RAGGED_SHARE):  # by day only, falling back, as configured
            assert find_gaps(s.conn, symbol, interval, wanted, by_day=True, ragged_share=share) == ordered


def test_a_plan_that_does_not_fit_the_interval_is_refused(store):
    with store.session() as s, pytest.raises(ValueError, match="do not nest in UTC days"):
        find_gaps(s.conn, "BTCUSDT", "W", None, by_day=True)


def test_a_day_missing_one_run_is_answered_from_its_sums_and_only_days_with_more_runs_are_read_again(
        store, monkeypatch):
    """Three days of one-minute bars: day 1 misses one run of five bars (its sums place it), day 2
    misses two runs (its bars are compared in order), day 3 misses the bars of its first hour (a day
    edge). The day pass is one statement; only day 2 costs a second one."""
    import infra.store.gaps as gaps

    symbol, interval = next(_symbols), "1"
    day = 1440
    missing = set(range(700, 705)) | {day + 10, day + 20, day + 21} | set(range(2 * day, 2 * day + 60))
    statements: list[str] = []
    real = gaps._execute
    monkeypatch.setattr(gaps, "_execute", lambda conn, sql, args: statements.append(sql) or real(conn, sql, args))
    with store.session() as s:
        s.write_bars([make_bar(symbol, interval, slot_ms(interval, i), seq=i) for i in range(3 * day) if i not in missing])
        got = find_gaps(s.conn, symbol, interval, None, by_day=True, ragged_share=1.0)
    expected = [BarRange(slot_ms(interval, a), slot_ms(interval, b))
                for a, b in ((700, 705), (day + 10, day + 11), (day + 20, day + 22), (2 * day, 2 * day + 60))]
    assert got == expected == reference_gaps(interval, {slot_ms(interval, i) for i in set(range(3 * day)) - missing}, None)
    assert [("_INSIDE" if "PARTITION BY" in sql else "_DAYS") for sql in statements] == ["_DAYS", "_INSIDE"]
    statements.clear()
    with store.session() as s:  # without day 2's second run: one statement
        s.write_bars([make_bar(symbol, interval, slot_ms(interval, day + 20), seq=1),
                      make_bar(symbol, interval, slot_ms(interval, day + 21), seq=2)])
        assert find_gaps(s.conn, symbol, interval, None, by_day=True, ragged_share=1.0) == [
            expected[0], expected[1], expected[3]]
    assert len(statements) == 1
