"""Queries (asked downward, always with a timeout) and their immutable answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from messages.account import Execution, Order, Position, Wallet
from messages.market import ClosedBar, Kline, Ticker
from messages.types import Message

BarKey = tuple[str, str]  # (symbol, interval)


class GetSnapshot(Message):
    """Ask the StateStore for an immutable view of everything it holds."""


@dataclass(frozen=True, slots=True)
class StateSnapshot:
    """The StateStore's answer: read-only mappings, taken on its own thread."""

    tickers: Mapping[str, Ticker]
    klines: Mapping[BarKey, Kline]
    bars: Mapping[BarKey, tuple[ClosedBar, ...]]
    wallet: Wallet | None
    positions: Mapping[tuple[str, int], Position]
    open_orders: Mapping[str, Order]
    recent_executions: tuple[Execution, ...]
    received_at: Mapping[str, float]  # stream -> time.monotonic() of its last message
    taken_at: float

    def age_s(self, stream: str) -> float | None:
        """Seconds since `stream` last delivered, or None if it never has."""
        seen = self.received_at.get(stream)
        return None if seen is None else self.taken_at - seen
