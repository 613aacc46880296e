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
* `_BY_DAY` (every interval up to "D", whose bars nest in UTC days): one
  pass counts each UTC day's bars, with its first and last. A day whose
  bars are all on the grid and exactly (count - 1) steps apart holds no
  gap: its bars are consecutive slots. Then only the neighbours at day
  edges (last bar of one stored day, first of the next: this covers
  missing whole days, and the range's ends) and the bars of the other
  ("ragged") days are compared. No global sort; the ragged days' bars
  are sorted per day. Measured on 1,051,200 one-minute bars with 20 gaps:
  2-2.5x faster than `_ORDERED` in wall time, a third of its CPU
  (bench/bench_store.py `_gap_scan`). When more than `RAGGED_SHARE` of
  the days are ragged (a thinly traded symbol with holes every day), it
  says so instead of comparing them, and the ordered scan runs: never much
  slower than `_ORDERED` alone (by the day count already paid for).

The on-the-grid condition keeps the plans equal for a bar stored off its
grid (only raw SQL can write one; `ClosedBar` refuses it): its day is
ragged and gets the neighbour comparison.

Why not a maintained coverage table (runs of stored bars, O(runs) to
read): every write would pay for it in the same transaction, and measured
on a 1,000-bar upsert that is +8 ms in SQL (13.6 -> 25.6 ms) or about
+1.3 ms computed from the batch in Arrow (plus compaction), against a
write path whose own target (`db_upsert_ratio` >= 0.8) has no such room;
and a file edited outside the store would make it lie. A scan is slower
but cannot disagree with the bars.
"""

from __future__ import annotations

import duckdb

from infra.store.ranges import BarRange, prev_open_ms
from messages.types import interval_ms, next_open_ms

_DAY_MS = 86_400_000
# Above this share of ragged days, comparing their bars costs more than sorting the whole
# series. Measured on 1,051,200 one-minute bars: by day wins while up to about a quarter of
# the days are ragged, loses from about a third, and costs 2-2.7x the ordered scan when every
# day is; falling back (after the day count) caps that at about 1.3x.
RAGGED_SHARE = 1 / 4

# $symbol, $interval, and with a range $lo/$hi (the range) and $before (the bar before it).
_BARS = "SELECT open_time FROM ohlcv WHERE symbol = $symbol AND interval = $interval"
_IN_RANGE = " AND open_time >= epoch_ms($lo::BIGINT) AND open_time < epoch_ms($hi::BIGINT)"

_ORDERED = """
WITH bars AS ({bars}{sentinel})
SELECT epoch_ms(prev), epoch_ms(open_time) FROM (
    SELECT open_time, lag(open_time{default}) OVER (ORDER BY open_time) AS prev FROM bars)
WHERE open_time > prev + {step} ORDER BY open_time"""

_BY_DAY = """
WITH bars AS NOT MATERIALIZED ({bars}),
days AS MATERIALIZED (
    SELECT open_time::DATE AS day, count(*) AS n, min(open_time) AS first, max(open_time) AS last,
           max(epoch_us(open_time) % $step_us) AS off_grid
    FROM bars GROUP BY day),
ragged AS MATERIALIZED (SELECT day FROM days WHERE off_grid <> 0 OR last - first <> {step} * (n - 1)),
plan AS MATERIALIZED (SELECT (SELECT count(*) FROM ragged) > (SELECT count(*) FROM days) * $ragged_share AS ordered),
day_edges AS (
    SELECT first AS open_time, lag(last{default}) OVER (ORDER BY first) AS prev
    FROM (SELECT first, last FROM days{sentinel_day}) WHERE NOT (SELECT ordered FROM plan)),
inside AS (
    SELECT open_time, lag(open_time) OVER (PARTITION BY open_time::DATE ORDER BY open_time) AS prev
    FROM bars WHERE NOT (SELECT ordered FROM plan) AND open_time::DATE IN (SELECT day FROM ragged))
SELECT epoch_ms(prev), epoch_ms(open_time) FROM (SELECT * FROM day_edges UNION ALL SELECT * FROM inside)
WHERE open_time > prev + {step}
UNION ALL SELECT NULL, NULL FROM plan WHERE ordered  -- too ragged: the caller runs the ordered scan
ORDER BY 2 NULLS FIRST"""


def _step_sql(interval: str) -> str:
    """The exact distance from one bar's open to the next, as a DuckDB interval."""
    if interval == "M":
        return "INTERVAL 1 MONTH"
    step = interval_ms(interval)
    assert step is not None
    return f"to_milliseconds({int(step)})"


def _by_day(interval: str) -> bool:
    """Bars of `interval` nest in UTC days and sit on a grid anchored at the epoch."""
    step = interval_ms(interval)
    return interval != "W" and step is not None and _DAY_MS % step == 0


def gaps_sql(symbol: str, interval: str, within: BarRange | None, *, by_day: bool | None = None,
             ragged_share: float = RAGGED_SHARE) -> tuple[str, dict]:
    """The statement and its parameters. Tests force the plans: `by_day` (None: by the interval),
    and within it `ragged_share` (1.0: never fall back to the ordered scan; below 0: always)."""
    if by_day is None:
        by_day = _by_day(interval)
    elif by_day and not _by_day(interval):
        raise ValueError(f"interval {interval!r} bars do not nest in UTC days")
    args: dict = {"symbol": symbol, "interval": interval}
    if within is None:
        bars, default, sentinel, sentinel_day = _BARS, "", "", ""
    else:
        # The range's end as one more (sentinel) bar, and a lag default one bar before its
        # start, turn the two edges into ordinary gaps of the same scan.
        bars = _BARS + _IN_RANGE
        default = ", 1, epoch_ms($before::BIGINT)"
        sentinel = " UNION ALL SELECT epoch_ms($hi::BIGINT)"
        sentinel_day = " UNION ALL SELECT epoch_ms($hi::BIGINT), epoch_ms($hi::BIGINT)"
        args.update(lo=within.start_ms, hi=within.end_ms, before=prev_open_ms(interval, within.start_ms))
    step = _step_sql(interval)
    if by_day:
        args["step_us"] = int(interval_ms(interval) or 0) * 1000
        args["ragged_share"] = float(ragged_share)
        return _BY_DAY.format(bars=bars, default=default, sentinel_day=sentinel_day, step=step), args
    return _ORDERED.format(bars=bars, default=default, sentinel=sentinel, step=step), args


def find_gaps(conn: duckdb.DuckDBPyConnection, symbol: str, interval: str, within: BarRange | None = None,
              *, by_day: bool | None = None, ragged_share: float = RAGGED_SHARE) -> list[BarRange]:
    """See `StoreSession.gaps`."""
    sql, args = gaps_sql(symbol, interval, within, by_day=by_day, ragged_share=ragged_share)
    rows = conn.execute(sql, args).fetchall()
    if rows and rows[0][0] is None:  # the day plan found too many ragged days: compare every bar in order
        rows = conn.execute(*gaps_sql(symbol, interval, within, by_day=False)).fetchall()
    return [BarRange(next_open_ms(interval, prev), nxt) for prev, nxt in rows]
