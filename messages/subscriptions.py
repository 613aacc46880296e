"""The desired public subscription set: what the node wants streamed, per symbol.

Held by the Supervisor and handed to WsPublic; a runtime `Subscribe` or
`Unsubscribe` makes a new set (the set is immutable, Pykka never copies a
message) and only then reaches the socket. After any reconnect the socket is
made to carry exactly `topics()` again (DATA-010). Intervals are per symbol:
adding one to a symbol never adds it to another (DATA-013).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from pydantic import Field, field_validator

from messages.commands import Subscribe, Unsubscribe
from messages.types import INTERVALS, Interval, Message, Symbol


class SymbolStreams(Message):
    """What one symbol streams: its ticker or not, and which kline intervals."""

    tickers: bool = False
    intervals: frozenset[Interval] = frozenset()

    @property
    def empty(self) -> bool:
        return not self.tickers and not self.intervals


class DesiredSubscriptions(Message):
    """Per symbol, the public streams wanted. Every method returns a new set."""

    symbols: Mapping[Symbol, SymbolStreams] = Field(default_factory=lambda: MappingProxyType({}))

    @field_validator("symbols", mode="after")
    @classmethod
    def _no_empty_entries(cls, value: Mapping[str, SymbolStreams]) -> Mapping[str, SymbolStreams]:
        # A symbol with nothing left is not "subscribed with nothing": it is gone.
        return MappingProxyType({s: v for s, v in sorted(value.items()) if not v.empty})

    @classmethod
    def from_config(cls, symbols: Mapping[str, object]) -> "DesiredSubscriptions":
        """From `config.node.symbols` (each entry has `intervals` and `tickers`)."""
        return cls(symbols={
            name: SymbolStreams(tickers=bool(getattr(cfg, "tickers")), intervals=frozenset(getattr(cfg, "intervals")))
            for name, cfg in symbols.items()
        })

    def subscribe(self, msg: Subscribe) -> "DesiredSubscriptions":
        current = self.symbols.get(msg.symbol, SymbolStreams())
        merged = SymbolStreams(tickers=current.tickers or msg.tickers, intervals=current.intervals | set(msg.intervals))
        return DesiredSubscriptions(symbols={**self.symbols, msg.symbol: merged})

    def unsubscribe(self, msg: Unsubscribe) -> "DesiredSubscriptions":
        current = self.symbols.get(msg.symbol)
        if current is None:
            return self
        intervals = frozenset() if msg.intervals is None else current.intervals - set(msg.intervals)
        kept = SymbolStreams(tickers=current.tickers and not msg.tickers, intervals=intervals)
        return DesiredSubscriptions(symbols={**self.symbols, msg.symbol: kept})

    def topics(self) -> tuple[str, ...]:
        """Bybit topic names, sorted: `tickers.BTCUSDT`, `kline.1.BTCUSDT`, ..."""
        out: list[str] = []
        for symbol, streams in self.symbols.items():
            if streams.tickers:
                out.append(f"tickers.{symbol}")
            out.extend(f"kline.{i}.{symbol}" for i in sorted(streams.intervals, key=INTERVALS.index))
        return tuple(out)

    def kline_series(self) -> tuple[tuple[str, str], ...]:
        """(symbol, interval) of every kline stream."""
        return tuple((s, i) for s, st in self.symbols.items() for i in sorted(st.intervals, key=INTERVALS.index))
