"""Market-data reader: what Risk and the Executor call for a price (DATA-023).

The interface is fixed here so the trading actors can be written against it;
the implementation (StateStore first when fresher than a per-field TTL, one
REST call through the gateway's query lane otherwise, cached) lives beside it.
Every answer says where it came from and how old it is; a caller that
demands a maximum age gets `StaleMarketData` instead of an old value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal, Protocol


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
    def quote(self, symbol: str, *, max_age_s: float | None = None) -> Quote:
        """Latest prices and funding for `symbol`; raises StaleMarketData."""
        ...
