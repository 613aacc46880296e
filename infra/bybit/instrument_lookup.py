"""Instrument rules as the venue lists them, fetched once an hour per symbol.

Every order, amend and position setting rounds to these rules, so the
cache is shared by all lane views of one gateway; the lookup itself rides
the caller's lane (Panic's view looks up on the panic lane).
"""

from __future__ import annotations

import threading
import time
from typing import Mapping

from infra.bybit.errors import Rejected
from infra.bybit.instruments import Instrument
from infra.bybit.product import CATEGORY
from infra.bybit.rate_limit import Lane
from infra.bybit.sender import Sender, parsing
from infra.bybit.transport import Endpoints


class InstrumentCache:
    """Instruments by symbol, each with the monotonic time it was fetched."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, Instrument]] = {}

    def get(self, symbol: str) -> tuple[float, Instrument] | None:
        with self._lock:
            return self._entries.get(symbol)

    def put(self, symbol: str, fetched_at: float, instrument: Instrument) -> None:
        with self._lock:
            self._entries[symbol] = (fetched_at, instrument)


class InstrumentLookup:
    """`Gateway`'s instrument rules, looked up through the shared cache."""

    INSTRUMENT_TTL_S = 3600.0

    _sender: Sender
    _instruments: InstrumentCache

    def instrument(self, symbol: str) -> Instrument:
        """Tick, step and minimums of `symbol` (cached for an hour)."""
        now = time.monotonic()
        cached = self._instruments.get(symbol)
        if cached is not None and now - cached[0] < self.INSTRUMENT_TTL_S:
            return cached[1]
        answer = self._sender.retried(Endpoints.INSTRUMENTS, self._sender.lane(Lane.QUERY), {"category": CATEGORY, "symbol": symbol})
        items = answer.result.get("list") or []
        match = [i for i in items if isinstance(i, Mapping) and i.get("symbol") == symbol]
        if not match:
            raise Rejected(10001, f"the venue lists no linear instrument {symbol}", endpoint=Endpoints.INSTRUMENTS.path)
        with parsing(Endpoints.INSTRUMENTS):
            inst = Instrument.from_bybit(match[0])
        self._instruments.put(symbol, now, inst)
        return inst

    def listed_symbols(self) -> list[str]:
        """Every linear symbol the venue lists as trading (all cursor pages; not cached)."""
        items = self._sender.pages(Endpoints.INSTRUMENTS, self._sender.lane(Lane.QUERY),
                                   {"category": CATEGORY, "limit": 1000})
        return [str(i["symbol"]) for i in items if isinstance(i, Mapping) and i.get("symbol")]
