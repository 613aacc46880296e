"""Helpers for tests and benchmarks: synthetic bar series with planted gaps.

Prices are made up but consistent (low <= open, close <= high) and exact,
so a round trip through the store can be compared bar for bar.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from decimal import Decimal
from typing import Collection, Iterator

from infra.store.ranges import ceil_open_ms, prev_open_ms
from messages.market import BarSource, ClosedBar
from messages.types import align_ms, ms_to_utc, next_open_ms, utc_to_ms


def opens(interval: str, start: datetime, count: int) -> Iterator[int]:
    """`count` consecutive bar open times (ms), from the first bar open at or after `start`."""
    t = ceil_open_ms(interval, utc_to_ms(start))
    for _ in range(count):
        yield t
        t = next_open_ms(interval, t)


def make_bar(symbol: str, interval: str, open_ms: int, *, seq: int = 0,
             source: BarSource = BarSource.REST) -> ClosedBar:
    base = Decimal(20000 + seq % 1000) + Decimal(seq % 7) / 4
    return ClosedBar(
        symbol=symbol,
        interval=interval,
        open_time=ms_to_utc(open_ms),
        open=base,
        high=base + Decimal("12.5"),
        low=base - Decimal("7.25"),
        close=base + Decimal("1.5"),
        volume=Decimal("1.234") + seq,
        turnover=(Decimal("1.234") + seq) * base,
        source=source,
    )


def make_series(symbol: str, interval: str, start: datetime, count: int, *,
                missing: Collection[int] = (), source: BarSource = BarSource.REST) -> list[ClosedBar]:
    """`count` bar slots from `start`, leaving out the slot indexes in `missing`."""
    skip = set(missing)
    return [
        make_bar(symbol, interval, t, seq=i, source=source)
        for i, t in enumerate(opens(interval, start, count))
        if i not in skip
    ]


def fill_minutes_sql(session, symbol: str, start: datetime, count: int, missing: Collection[int] = ()) -> int:
    """Bulk-load `count` one-minute bar slots in SQL (fast setup for big files), leaving out `missing`.

    Test and benchmark setup only: it bypasses `write_bars` (the series'
    first and last bar are read from the bars, so they are right anyway).
    """
    skip = sorted(set(missing))
    session.conn.execute(
        """INSERT INTO ohlcv
           SELECT $symbol, '1', epoch_ms($start::BIGINT) + to_minutes(i),
                  20000 + i % 1000, 20012.5 + i % 1000, 19992.75 + i % 1000, 20001.5 + i % 1000,
                  1.234 + i % 100, 24680.5 + i % 1000, 'rest'
           FROM range($count) t(i) WHERE NOT list_contains($skip::BIGINT[], i)""",
        {"symbol": symbol, "start": utc_to_ms(start), "count": count, "skip": skip},
    )
    return count - len(skip)


def kline_frame(bar: ClosedBar, *, confirm: bool = True, ts_ms: int | None = None) -> dict:
    """A `kline.{interval}.{symbol}` WebSocket frame carrying `bar`, as Bybit pushes it."""
    end = next_open_ms(bar.interval, bar.open_ms) - 1
    ts = end + 1 if ts_ms is None else ts_ms
    return {
        "topic": f"kline.{bar.interval}.{bar.symbol}",
        "type": "snapshot",
        "ts": ts,
        "data": [
            {
                "start": bar.open_ms,
                "end": end,
                "interval": bar.interval,
                "open": str(bar.open),
                "close": str(bar.close),
                "high": str(bar.high),
                "low": str(bar.low),
                "volume": str(bar.volume),
                "turnover": str(bar.turnover),
                "confirm": confirm,
                "timestamp": ts,
            }
        ],
    }


class FakeVenue:
    """GET /v5/market/kline as Bybit answers it, over made-up bars: a `KlineSource` for unit tests.

    Rows newest first; `start_ms`/`end_ms` inclusive on the open time; the
    bar still open at `now_ms` is included; nothing before `listing_ms` or
    inside a hole exists; at most `limit` rows, counted from the newest.
    `faults` are raised one per call, in order, before answering.
    """

    def __init__(self, now_ms: int, *, listing_ms: int = 0, holes: Collection[tuple[int, int]] = (),
                 faults: Collection[BaseException] = ()):
        self.now_ms = now_ms
        self.listing_ms = listing_ms
        self.holes = list(holes)  # [start, end) of open times
        self.faults = list(faults)
        self.requests: list[tuple[str, str, int, int, int]] = []
        self._lock = threading.Lock()  # the sync sends more than one request at a time

    def server_time(self) -> "ServerTime":
        """Its clock stands at `now_ms`; the skew is against ours, as the gateway reports it."""
        from infra.bybit.models import ServerTime  # noqa: PLC0415 - test helper, the gateway's own type

        return ServerTime(server_ms=self.now_ms, skew_ms=self.now_ms - int(time.time() * 1000), round_trip_ms=0)

    def fetch_klines(self, symbol: str, interval: str, start_ms: int, end_ms: int, limit: int = 1000) -> list[ClosedBar]:
        with self._lock:
            self.requests.append((symbol, interval, start_ms, end_ms, limit))
            fault = self.faults.pop(0) if self.faults else None
        if fault is not None:
            raise fault
        newest = align_ms(interval, min(end_ms, self.now_ms))
        lowest = max(start_ms, self.listing_ms)
        out: list[ClosedBar] = []
        t = newest
        while t >= lowest and len(out) < limit:
            if not any(a <= t < b for a, b in self.holes):
                out.append(make_bar(symbol, interval, t, seq=t // 60_000 % 100_000))
            t = prev_open_ms(interval, t)
        return out

    def fetch_kline_rows(self, symbol: str, interval: str, start_ms: int, end_ms: int, limit: int = 1000) -> list:
        """The same page as the venue's raw `result.list` rows (strings), as the gateway hands them over."""
        return [bar_row(b) for b in self.fetch_klines(symbol, interval, start_ms, end_ms, limit)]

    @staticmethod
    def parse_kline_rows(symbol: str, interval: str, rows: list) -> list[ClosedBar]:
        """As the gateway parses: a row that does not parse is the venue's MalformedResponse."""
        from infra.bybit.market_data import MarketData  # noqa: PLC0415 - test helper, the gateway's own rule

        return MarketData.parse_kline_rows(symbol, interval, rows)


def bar_row(bar: ClosedBar) -> list[str]:
    """One GET /v5/market/kline row for `bar`: [start, open, high, low, close, volume, turnover]."""
    return [str(bar.open_ms), *(str(getattr(bar, f)) for f in ("open", "high", "low", "close", "volume", "turnover"))]
