"""Ranges of one series with no stored bar, found in SQL: only the gap rows leave DuckDB (DATA-003).

The rule (DATA-004): the bar after one opening at `t` is due exactly one
interval later (a calendar month for "M"); a stored bar later than that
leaves a gap from the due time to itself. So a gap is a pair of
neighbouring stored bars (in open-time order) further apart than a step.
With a range, the range's end is one more neighbour (a bar there would end
the last gap) and the bar before the range's start is the first.

Two plans give that same answer:

* `_ORDERED`: every stored bar next to its predecessor, `lag()` over the
  whole series. It sorts the series (about 20 ms per million bars on this
  2-core machine, most of the scan). Used for "W" and "M", whose series
  are short (a century of weeks is 5,200 bars) and whose steps do not fit
  a day.
* `_DAYS` then `_INSIDE` (every interval up to "D", whose bars nest in UTC
  days): one pass groups the bars by UTC day: count, first, last, and the
  sum and the sum of squares of their slot numbers (open time in whole
  steps since the epoch). A day whose bars are all on the grid and exactly
  (count - 1) steps apart holds no gap.
  Only the neighbours at day edges (last bar of one stored day, first of
  the next: this covers missing whole days, and the range's ends) and the
  "ragged" days leave DuckDB. A ragged day's missing slots form one run
  exactly when their spread is that of consecutive integers: m distinct
  integers have a sum of squared deviations of at least (m^3 - m) / 12, with
  equality only when they are consecutive. Then the count, sum and sum of
  squares of the missing slots (the day's span minus what is stored) say
  where that one run is, with no second pass. Only days with two or more
  runs (or a bar off the grid) get `_INSIDE`, which compares their bars
  in order, day by day. No global sort. Measured on 1,051,200 one-minute
  bars with 20 single-bar gaps: one pass of about 5 ms, against about 14 ms
  for the earlier single statement that compared every ragged day's bars
  (bench/bench_store.py `_gap_scan`). When more than `RAGGED_SHARE` of the
  days have two or more runs (a thinly traded symbol with holes all over),
  the ordered scan runs instead: never much slower than `_ORDERED` alone
  (by the day pass already paid for).

The on-the-grid condition keeps the plans equal for a bar stored off its
grid (only raw SQL can write one; `ClosedBar` refuses it): its open time
is more than its slot's start, so the day's open times add up to more than
its slots' starts; that day gets the neighbour comparison.

Why not a maintained coverage table (runs of stored bars, O(runs) to
read): every write would pay for it in the same transaction, and measured
on a 1,000-bar upsert that is +8 ms in SQL (13.6 -> 25.6 ms) or about
+1.3 ms computed from the batch in Arrow (plus compaction), against a
write path whose own target (`db_upsert_ratio` >= 0.8) has no such room;
and a file edited outside the store would make it lie. A scan is slower
but cannot disagree with the bars.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

import duckdb

from infra.store.ranges import BarRange, prev_open_ms
from messages.types import interval_ms, next_open_ms

_DAY_MS = 86_400_000
_EPOCH_DAY = date(1970, 1, 1)
# Above this share of days whose bars must be compared (two or more runs missing, or a bar off
# the grid), comparing them costs more than sorting the whole series. Measured on 1,051,200
# one-minute bars (with the earlier plan, which compared every ragged day): by day wins while up
# to about a quarter of the days need it, loses from about a third, and costs 2-2.7x the ordered
# scan when every day does; falling back (after the day pass) caps that at about 1.3x.
RAGGED_SHARE = 1 / 4

# $symbol, $interval, and with a range $lo/$hi (the range) and $before (the bar before it).
_BARS = "SELECT open_time FROM ohlcv WHERE symbol = $symbol AND interval = $interval"
_IN_RANGE = " AND open_time >= epoch_ms($lo::BIGINT) AND open_time < epoch_ms($hi::BIGINT)"

_ORDERED = """
WITH bars AS ({bars}{sentinel})
SELECT epoch_ms(prev), epoch_ms(open_time) FROM (
    SELECT open_time, lag(open_time{default}) OVER (ORDER BY open_time) AS prev FROM bars)
WHERE open_time > prev + {step} ORDER BY open_time"""

# Per UTC day: count, first, last, and the sum, slot-number sum and slot-number sum of squares
# of its bars' open times (a bar's slot: its open time in whole steps since the epoch; a bar off
# the grid makes the open times add up to more than their slots' starts); with the day before's
# last bar (or the bar before the range). Only the days that end a gap at their start (`edge`),
# or hold one inside (`ragged`), come back.
_DAYS = """
SELECT first_ms, last_ms, prev_ms, n, on_grid, edge, ragged, s1, s2, days FROM (
    SELECT *, coalesce(first_ms > prev_ms + $step_ms, false) AS edge,
           n IS NOT NULL AND NOT (on_grid AND last_ms - first_ms = $step_ms * (n - 1)) AS ragged
    FROM (
        SELECT epoch_ms(first) AS first_ms, epoch_ms(last) AS last_ms,
               epoch_ms(lag(last{default}) OVER (ORDER BY first)) AS prev_ms,
               n, us_sum = s1 * $step_us AS on_grid, s1, s2, count(n) OVER () AS days
        FROM (
            SELECT count(*) AS n, min(open_time) AS first, max(open_time) AS last,
                   sum(epoch_us(open_time)) AS us_sum, sum(epoch_us(open_time) // $step_us) AS s1,
                   sum((epoch_us(open_time) // $step_us) * (epoch_us(open_time) // $step_us)) AS s2
            FROM ({bars}) GROUP BY open_time::DATE{sentinel_day})))
WHERE edge OR ragged"""

# Every bar of the given days next to its predecessor in the same day.
_INSIDE = """
SELECT epoch_ms(prev), epoch_ms(open_time) FROM (
    SELECT open_time, lag(open_time) OVER (PARTITION BY open_time::DATE ORDER BY open_time) AS prev
    FROM ({bars}) WHERE open_time::DATE IN (SELECT unnest($days::DATE[])))
WHERE open_time > prev + {step}"""


def _step_sql(interval: str) -> str:
    """The exact distance from one bar's open to the next, as a DuckDB interval."""
    if interval == "M":
        return "INTERVAL 1 MONTH"
    step = interval_ms(interval)
    assert step is not None
    return f"to_milliseconds({int(step)})"


def _bars(symbol: str, interval: str, within: BarRange | None) -> tuple[str, str, dict]:
    """The series' bars (in the range), the lag default, and their parameters.

    With a range, a lag default one bar before its start, and (in each plan) the range's end as
    one more sentinel bar, turn the two edges into ordinary gaps of the same scan."""
    args: dict = {"symbol": symbol, "interval": interval}
    if within is None:
        return _BARS, "", args
    args.update(lo=within.start_ms, hi=within.end_ms, before=prev_open_ms(interval, within.start_ms))
    return _BARS + _IN_RANGE, ", 1, epoch_ms($before::BIGINT)", args


def _execute(conn: duckdb.DuckDBPyConnection, sql: str, args: dict) -> list[tuple]:
    """DuckDB refuses a named parameter the statement does not use: pass only those it does."""
    return conn.execute(sql, {k: v for k, v in args.items() if re.search(rf"\${k}\b", sql)}).fetchall()


def _ordered(conn: duckdb.DuckDBPyConnection, symbol: str, interval: str, within: BarRange | None) -> list[tuple]:
    bars, default, args = _bars(symbol, interval, within)
    sentinel = "" if within is None else " UNION ALL SELECT epoch_ms($hi::BIGINT)"
    return _execute(conn, _ORDERED.format(bars=bars, default=default, sentinel=sentinel, step=_step_sql(interval)), args)


def _square_sum(x: int) -> int:
    """0^2 + 1^2 + ... + x^2 (0 for x < 1)."""
    return x * (x + 1) * (2 * x + 1) // 6 if x > 0 else 0


def _one_run(first: int, last: int, n: int, s1: int, s2: int, step: int) -> tuple[int, int] | None:
    """The (prev, next) pair around a day's missing slots when they are one run; None when they are not.

    Between the day's first bar (slot a) and its last (slot b) it misses m slots; their sum and
    sum of squares are the span's minus the stored bars'. m distinct integers spread exactly as
    much as consecutive ones only if they are consecutive."""
    a, b = first // step, last // step
    m = b - a + 1 - n
    missing_sum = (a + b) * (b - a + 1) // 2 - s1
    missing_squares = _square_sum(b) - _square_sum(a - 1) - s2
    if m <= 0 or 12 * (m * missing_squares - missing_sum * missing_sum) != m * m * (m * m - 1):
        return None
    g = (2 * missing_sum - m * (m - 1)) // (2 * m)  # the run's first slot
    return (g - 1) * step, (g + m) * step


def _by_day(conn: duckdb.DuckDBPyConnection, symbol: str, interval: str, within: BarRange | None,
            ragged_share: float) -> list[tuple] | None:
    """(prev, next) pairs around every gap; None when too many days need their bars compared."""
    step = int(interval_ms(interval) or 0)
    bars, default, args = _bars(symbol, interval, within)
    sentinel_day = "" if within is None else (
        " UNION ALL SELECT NULL, epoch_ms($hi::BIGINT), epoch_ms($hi::BIGINT), NULL, NULL, NULL")
    args.update(step_us=step * 1000, step_ms=step)
    rows = _execute(conn, _DAYS.format(bars=bars, default=default, sentinel_day=sentinel_day), args)
    pairs: list[tuple] = []
    crowded: list[date] = []  # days with two or more runs missing, or a bar off the grid
    days = 0
    for first, last, prev, n, on_grid, edge, ragged, s1, s2, days in rows:
        if edge:
            pairs.append((prev, first))
        if not ragged:
            continue  # the range's end, or a day that only ends a gap before it
        run = _one_run(first, last, n, int(s1), int(s2), step) if on_grid else None
        if run is not None:
            pairs.append(run)
        else:
            crowded.append(_EPOCH_DAY + timedelta(days=first // _DAY_MS))
    if len(crowded) > days * ragged_share:
        return None
    if crowded:
        args["days"] = crowded
        pairs += _execute(conn, _INSIDE.format(bars=bars, step=_step_sql(interval)), args)
    return pairs


def _fits_days(interval: str) -> bool:
    """Bars of `interval` nest in UTC days and sit on a grid anchored at the epoch."""
    step = interval_ms(interval)
    return interval != "W" and step is not None and _DAY_MS % step == 0


def find_gaps(conn: duckdb.DuckDBPyConnection, symbol: str, interval: str, within: BarRange | None = None,
              *, by_day: bool | None = None, ragged_share: float = RAGGED_SHARE) -> list[BarRange]:
    """See `StoreSession.gaps`. Tests force the plans: `by_day` (None: by the interval), and within it
    `ragged_share` (1.0: never fall back to the ordered scan; below 0: always, once a day is ragged)."""
    if by_day is None:
        by_day = _fits_days(interval)
    elif by_day and not _fits_days(interval):
        raise ValueError(f"interval {interval!r} bars do not nest in UTC days")
    pairs = _by_day(conn, symbol, interval, within, ragged_share) if by_day else None
    if pairs is None:
        pairs = _ordered(conn, symbol, interval, within)
    return [BarRange(next_open_ms(interval, prev), nxt) for prev, nxt in sorted(pairs, key=lambda p: p[1])]
