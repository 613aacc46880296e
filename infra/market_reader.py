"""Market-data reader: what Risk and the Executor call for a price (DATA-023).

`MarketReader` is the interface the trading actors are written against;
`LiveMarketReader` implements it: the StateStore's ticker when it is
younger than the TTL of every field asked for (`market_data.price_ttl_s`
for last/mark price, `funding_ttl_s` for funding rate and next funding
time), otherwise one REST ticker read through the gateway's query lane,
cached for the same TTL so a burst of callers costs one request. Every
answer says where it came from (`ws` / `rest`) and how old it is; a caller
that demands a maximum age gets `StaleMarketData` instead of an old value.
A funding rate of 0 is a value (DATA-015): only None is "unknown".

It runs on the caller's thread (the Executor's, Risk's) and reads the
StateStore with an ask downward, with a timeout.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Callable, Literal, Protocol

from infra.logging import get_logger
from messages.market import Ticker
from messages.queries import GetTicker, TickerView

log = get_logger("market_data")

PRICE_FIELDS = ("last_price", "mark_price")
FUNDING_FIELDS = ("funding_rate", "next_funding_time")
ALL_FIELDS = PRICE_FIELDS + FUNDING_FIELDS


class StaleMarketData(Exception):
    """No value young enough: neither the stream nor the REST fallback produced one."""

    def __init__(self, symbol: str, field: str, age_s: float | None, max_age_s: float | None):
        self.symbol, self.field, self.age_s, self.max_age_s = symbol, field, age_s, max_age_s
        super().__init__(f"{symbol} {field}: age {age_s} s exceeds {max_age_s} s" if age_s is not None
                         else f"{symbol} {field}: no value")


@dataclass(frozen=True, slots=True)
class Quote:
    symbol: str
    last_price: Decimal | None
    mark_price: Decimal | None
    funding_rate: Decimal | None  # 0 is a value (DATA-015), None is "unknown"
    next_funding_time: datetime | None
    source: Literal["ws", "rest"]
    age_s: float


class MarketReader(Protocol):
    def quote(self, symbol: str, *, max_age_s: float | None = None, stream: TickerView | None = None) -> Quote:
        """Latest prices and funding for `symbol`; raises StaleMarketData.

        `stream`: the StateStore's view of the symbol the caller already holds
        (taken with its own ask a moment ago): used instead of asking again.
        """
        ...


@dataclass(frozen=True, slots=True)
class _Seen:
    ticker: Ticker
    age_s: float
    source: Literal["ws", "rest"]

    def has(self, fields: tuple[str, ...]) -> bool:
        return all(getattr(self.ticker, f) is not None for f in fields)

    def quote(self) -> Quote:
        t = self.ticker
        return Quote(symbol=t.symbol, last_price=t.last_price, mark_price=t.mark_price, funding_rate=t.funding_rate,
                     next_funding_time=t.next_funding_time, source=self.source, age_s=self.age_s)


class LiveMarketReader:
    """StateStore first, one cached REST read when the stream is too old. Thread-safe."""

    def __init__(
        self,
        state_store: Callable[[], Any],
        gateway: Any,
        *,
        price_ttl_s: float = 5.0,
        funding_ttl_s: float = 60.0,
        ask_timeout_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._state_store = state_store  # -> the StateStore's current ActorRef, or None
        self._gateway = gateway
        self._ttl = {**{f: price_ttl_s for f in PRICE_FIELDS}, **{f: funding_ttl_s for f in FUNDING_FIELDS}}
        # fields -> the TTL that bounds them, checked once per distinct tuple (callers pass a
        # handful of constants) rather than two sets and a min on every quote of a signal's path.
        self._limits: dict[tuple[str, ...], float] = {}
        self._ask_timeout_s = ask_timeout_s
        self._clock = clock
        self._cache: dict[str, tuple[Ticker, float]] = {}  # symbol -> (ticker, fetched at)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @classmethod
    def from_config(cls, node: Any, state_store: Callable[[], Any], gateway: Any) -> "LiveMarketReader":
        md = node.market_data
        return cls(state_store, gateway, price_ttl_s=float(md.price_ttl_s), funding_ttl_s=float(md.funding_ttl_s),
                   ask_timeout_s=float(node.supervisor.ask_timeout_s))

    def quote(self, symbol: str, *, max_age_s: float | None = None, stream: TickerView | None = None,
              fields: tuple[str, ...] = ALL_FIELDS) -> Quote:
        """Latest values of `fields` for `symbol` (all by default); raises StaleMarketData."""
        limit = self._limits.get(fields)
        if limit is None:
            unknown = set(fields) - set(ALL_FIELDS)
            if unknown or not fields:
                raise ValueError(f"fields must be among {ALL_FIELDS}, got {fields}")
            limit = self._limits[fields] = min(self._ttl[f] for f in fields)
        if max_age_s is not None and max_age_s < limit:
            limit = max_age_s
        from_stream = self._from_view(stream) if stream is not None else self._from_state(symbol)
        seen = [s for s in (from_stream, self._from_cache(symbol)) if s is not None and s.has(fields)]
        fresh = [s for s in seen if s.age_s <= limit]
        if fresh:
            return min(fresh, key=lambda s: s.age_s).quote()
        fetched = self._fetch(symbol, limit, seen)
        if fetched is not None and fetched.has(fields) and fetched.age_s <= limit:
            return fetched.quote()
        if fetched is not None and fetched.has(fields):
            seen.append(fetched)
        best = min(seen, key=lambda s: s.age_s) if seen else None
        if max_age_s is None and best is not None:
            return best.quote()  # older than the TTL, and it says so
        missing = next((f for f in fields if best is None or getattr(best.ticker, f) is None), fields[0])
        raise StaleMarketData(symbol, missing, best.age_s if best else None, max_age_s)

    # --- sources ---------------------------------------------------------------

    def _from_state(self, symbol: str) -> _Seen | None:
        ref = self._state_store()
        if ref is None:
            return None
        try:
            view: TickerView = ref.ask(GetTicker(symbol=symbol), timeout=self._ask_timeout_s)
        except Exception as exc:  # noqa: BLE001 - a busy or dead StateStore means "no stream value"
            log.warning("market.state_unavailable", symbol=symbol, error=repr(exc))
            return None
        return self._from_view(view)

    @staticmethod
    def _from_view(view: TickerView | None) -> _Seen | None:
        if view is None or view.ticker is None or view.age_s is None:
            return None
        return _Seen(view.ticker, view.age_s, "ws")

    def _from_cache(self, symbol: str) -> _Seen | None:
        with self._guard:
            hit = self._cache.get(symbol)
        if hit is None:
            return None
        return _Seen(hit[0], max(0.0, self._clock() - hit[1]), "rest")

    def _fetch(self, symbol: str, limit: float, seen: list[_Seen]) -> _Seen | None:
        """One REST read per symbol at a time; a caller that waited on another's read uses its answer."""
        with self._guard:
            lock = self._locks.setdefault(symbol, threading.Lock())
        with lock:
            cached = self._from_cache(symbol)
            if cached is not None and cached.age_s <= limit:
                return cached
            stream_age = min((s.age_s for s in seen if s.source == "ws"), default=None)
            log.info("market.rest_fallback", symbol=symbol, stream_age_s=None if stream_age is None else round(stream_age, 3),
                     limit_s=limit)
            try:
                ticker = self._gateway.get_ticker(symbol)
            except Exception as exc:  # noqa: BLE001 - reported to the caller as stale data
                log.warning("market.rest_failed", symbol=symbol, error=repr(exc), error_type=type(exc).__name__)
                return None
            now = self._clock()
            with self._guard:
                self._cache[symbol] = (ticker, now)
            return _Seen(ticker, 0.0, "rest")
