"""Public market reads: the venue's clock, and one page of kline history for the sync."""

from __future__ import annotations

import time

from infra.bybit.errors import MalformedResponse
from infra.bybit.models import ServerTime
from infra.bybit.product import CATEGORY
from infra.bybit.rate_limit import Lane
from infra.bybit.sender import Sender, parsing
from infra.bybit.transport import Endpoints
from messages.market import ClosedBar, Ticker
from messages.types import INTERVALS

_KLINE_MAX = 1000


class MarketData:
    """`Gateway`'s server time, tickers and history pages."""

    _sender: Sender

    def server_time(self) -> ServerTime:
        """The venue's clock and our skew against it (round trip halved)."""
        lane = self._sender.lane(Lane.QUERY)
        before = time.time() * 1000
        answer = self._sender.retried(Endpoints.SERVER_TIME, lane)
        after = time.time() * 1000
        nano = answer.result.get("timeNano")
        second = answer.result.get("timeSecond")
        try:
            if nano:
                server_ms = int(str(nano)) // 1_000_000
            elif second:
                server_ms = int(str(second)) * 1000
            elif answer.time_ms:
                server_ms = answer.time_ms
            else:
                raise ValueError("no time in the answer")
        except ValueError as exc:
            raise MalformedResponse(f"server time: {exc}", endpoint=Endpoints.SERVER_TIME.path) from None
        midpoint = (before + after) / 2
        return ServerTime(server_ms=server_ms, skew_ms=round(server_ms - midpoint), round_trip_ms=round(after - before))

    def get_ticker(self, symbol: str) -> Ticker:
        """One symbol's ticker over REST (the market-data reader's fallback), on the query lane.

        Sent once: a price read that has to wait out retries is stale by the
        time it answers, so the caller decides what a failure means.
        """
        answer = self._sender.once(Endpoints.TICKERS, self._sender.lane(Lane.QUERY), {"category": CATEGORY, "symbol": symbol})
        rows = [r for r in (answer.result.get("list") or []) if isinstance(r, dict) and r.get("symbol") == symbol]
        if len(rows) != 1:
            raise MalformedResponse(f"tickers answer holds {len(rows)} rows for {symbol}", endpoint=Endpoints.TICKERS.path)
        with parsing(Endpoints.TICKERS):
            return Ticker.from_rest(rows[0], answer.time_ms or int(time.time() * 1000))

    def fetch_klines(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, limit: int = _KLINE_MAX
    ) -> list[ClosedBar]:
        """One page of GET /v5/market/kline on the backfill lane, exactly as the venue gave it.

        Newest first; `start_ms`/`end_ms` inclusive on the bar open time; the
        first row may be the still-open bar. Sent once, no retries (the sync
        owns them); errors are `infra.bybit.errors` types only.
        """
        return self.parse_kline_rows(symbol, interval, self.fetch_kline_rows(symbol, interval, start_ms, end_ms, limit))

    def fetch_kline_rows(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, limit: int = _KLINE_MAX
    ) -> list:
        """`fetch_klines` without the parsing: the page's `result.list` rows as the venue sent them.

        For the history sync, which turns a whole page into columns at once
        (infra.store.batch.table_from_rows) and falls back to
        `parse_kline_rows` for a page that does not pass as a whole.
        """
        if interval not in INTERVALS:
            raise ValueError(f"unknown interval {interval!r}")
        if not 1 <= limit <= _KLINE_MAX:
            raise ValueError(f"limit must be within 1..{_KLINE_MAX}, got {limit}")
        if start_ms > end_ms:
            raise ValueError(f"start_ms {start_ms} is after end_ms {end_ms}")
        params = {"category": CATEGORY, "symbol": symbol, "interval": interval, "start": start_ms, "end": end_ms, "limit": limit}
        answer = self._sender.once(Endpoints.KLINE, self._sender.lane(Lane.BACKFILL), params)
        rows = answer.result.get("list")
        if not isinstance(rows, list):
            raise MalformedResponse("kline result.list missing", endpoint=Endpoints.KLINE.path)
        answered_symbol = answer.result.get("symbol")
        if answered_symbol not in (None, "", symbol):
            raise MalformedResponse(f"asked for {symbol}, got {answered_symbol}", endpoint=Endpoints.KLINE.path)
        return rows

    @staticmethod
    def parse_kline_rows(symbol: str, interval: str, rows: list) -> list[ClosedBar]:
        """Kline rows into ClosedBars, one by one; a row that does not parse is a MalformedResponse."""
        with parsing(Endpoints.KLINE):
            return [ClosedBar.from_rest_row(symbol, interval, row) for row in rows]
