"""Queries (asked downward, always with a timeout) and their immutable answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from messages.account import Execution, Order, Position, PositionPnl, Wallet
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
    # Funding, ADL, bust, settlement and delivery executions: kept, never fills.
    # `recent_executions` holds trade fills only.
    other_executions: tuple[Execution, ...] = ()
    ready: bool = False

    def age_s(self, stream: str) -> float | None:
        """Seconds since `stream` last delivered, or None if it never has."""
        seen = self.received_at.get(stream)
        return None if seen is None else self.taken_at - seen

    def position_pnl(self) -> dict[tuple[str, int], PositionPnl]:
        """Unrealised PnL of every open position, against the ticker's mark where one is held."""
        out = {}
        for key, pos in self.positions.items():
            if pos.is_open:
                ticker = self.tickers.get(pos.symbol)
                out[key] = PositionPnl.of(pos, ticker.mark_price if ticker is not None else None)
        return out


class GetTicker(Message):
    """Ask the StateStore for one symbol's merged ticker and its age (lighter than a snapshot)."""

    symbol: str


@dataclass(frozen=True, slots=True)
class TickerView:
    ticker: Ticker | None
    age_s: float | None  # seconds since the ticker stream last delivered; None: never


class GetHealth(Message):
    """Ask the StateStore for per-stream health and the `ready` flag."""


class CheckHealth(Message):
    """Told to the StateStore by its own timer thread: judge staleness now, tell Panic if `ready` flipped."""


@dataclass(frozen=True, slots=True)
class StreamHealth:
    """One stream as the StateStore sees it. `age_s` None: it never delivered."""

    connected: bool
    age_s: float | None
    stale: bool
    frames: int
    rejected: int
    # False for streams that are silent by nature (private order/execution/position/wallet
    # push only when something happens): shown, never counted toward `ready`.
    watched: bool = True


@dataclass(frozen=True, slots=True)
class HealthReport:
    """`ready` is true only when wallet and positions are seeded and every subscribed stream is fresh."""

    ready: bool
    reasons: tuple[str, ...]  # why not ready; empty when ready
    streams: Mapping[str, StreamHealth]
    wallet_seeded: bool
    positions_seeded: bool
    # True once the private socket's latest (re)connect was followed by a REST reseed.
    private_seam_healed: bool = False
    stale_streams: tuple[str, ...] = ()


class GetTradingState(Message):
    """Ask Panic (owner of the trading state) for it; the answer is a `TradingStateChanged`-shaped view."""


class GetWriterStats(Message):
    """Ask the DbWriter for its queue and last flush (for `status` and `node.metrics`)."""


@dataclass(frozen=True, slots=True)
class WriterStats:
    pending_bars: int
    mailbox: int
    last_flush_at: str | None  # ISO UTC of the last successful flush
    last_flush_bars: int
    failing_since: str | None  # ISO UTC of the first failed flush in the current run of failures
    last_error: str | None
