"""Trading-path messages: what the Executor asks Risk, and what a signal became.

Frozen dataclasses, like `StateSnapshot` and `CloseResult`: they carry
already-validated figures between actors on the hot path, where a pydantic
round of validation per field would cost more than the check itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Iterable, Mapping

from messages.account import Position, Wallet
from messages.control import TradingState
from messages.queries import StateSnapshot, TickerView
from messages.types import Message, Side

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class PositionView:
    """One open position as Risk needs it: signed size and a price to value it at."""

    symbol: str
    signed_size: Decimal  # > 0 long, < 0 short
    price: Decimal  # mark price when known, else entry price

    @property
    def notional(self) -> Decimal:
        return abs(self.signed_size) * self.price


@dataclass(frozen=True, slots=True)
class PortfolioSnapshot:
    """Everything a pre-trade check reads, taken once from one StateStore snapshot.

    `wallet_balance` is the realised basis (no unrealised PnL); `equity`
    includes unrealised PnL. None means the wallet was never seen.
    """

    equity: Decimal | None
    wallet_balance: Decimal | None
    available_balance: Decimal | None
    positions: tuple[PositionView, ...]

    def position(self, symbol: str) -> PositionView | None:
        return next((p for p in self.positions if p.symbol == symbol), None)

    @property
    def gross_exposure(self) -> Decimal:
        return sum((p.notional for p in self.positions), _ZERO)

    @classmethod
    def from_state(cls, state: StateSnapshot) -> "PortfolioSnapshot":
        return cls.of(state.wallet, state.positions.values())

    @classmethod
    def of(cls, wallet: Wallet | None, positions: Iterable[Position]) -> "PortfolioSnapshot":
        views = []
        for pos in positions:
            if not pos.is_open:
                continue
            price = pos.mark_price or pos.entry_price
            assert price is not None  # an open Position always has an entry price
            views.append(PositionView(symbol=pos.symbol, signed_size=pos.signed_size, price=price))
        return cls(
            equity=wallet.total_equity if wallet else None,
            wallet_balance=wallet.total_wallet_balance if wallet else None,
            available_balance=(wallet.total_available_balance if wallet else None),
            positions=tuple(sorted(views, key=lambda v: v.symbol)),
        )


class GetTradingView(Message):
    """Ask the StateStore for what one pre-trade decision reads, in one answer.

    Lighter than `GetSnapshot` (no copy of bars, klines, executions, no health
    report), and it carries the symbol's ticker too, so the market reader
    needs no second ask: each hop is a thread wake on the signal's path.
    """

    symbol: str


@dataclass(frozen=True, slots=True)
class TradingView:
    portfolio: PortfolioSnapshot
    ticker: TickerView


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """The order the Executor means to send, as Risk judges it."""

    symbol: str
    side: Side
    qty: Decimal
    price: Decimal | None  # reference price (mark/last); None if unknown
    reduce_only: bool = False

    @property
    def signed_qty(self) -> Decimal:
        return self.qty if self.side is Side.BUY else -self.qty


@dataclass(frozen=True, slots=True)
class RiskCheck:
    """Executor -> Risk (ask): may this order go out, judged from this one snapshot?"""

    signal_id: str
    intent: OrderIntent
    portfolio: PortfolioSnapshot
    trading_state: TradingState
    funding_rate: Decimal | None = None  # None: unknown (0 is a value, DATA-015)
    is_close: bool = False  # a FLAT signal's close
    # Entries sent whose fill the portfolio may not show yet (signed qty at their reference price):
    # they count against the open-position and exposure limits as if filled.
    in_flight: tuple[PositionView, ...] = ()


@dataclass(frozen=True, slots=True)
class RiskDecision:
    """Risk's answer. `check` names the failed check (None when allowed); `figures` are what it compared."""

    allowed: bool
    check: str | None
    reason: str
    figures: Mapping[str, str] = field(default_factory=dict)


class ExecutionOutcome(StrEnum):
    FILLED = "filled"  # the order filled (fully)
    PARTIALLY_FILLED = "partially_filled"  # ended (cancelled/expired) with part of it filled
    CLOSED = "closed"  # a FLAT signal: Panic closed the position
    ALREADY_FLAT = "already_flat"  # a FLAT signal with nothing to close
    BLOCKED = "blocked"  # refused before anything was sent (state, mode, risk, price, size)
    REJECTED = "rejected"  # the venue (or the gateway's pre-send checks) refused the order
    UNKNOWN = "unknown"  # sent; the venue's answer was lost and the order was not found (a close: Panic did not answer)
    UNCONFIRMED = "unconfirmed"  # accepted; no fill seen within fill_timeout_s
    PENDING = "pending"  # sent (its create not answered yet: no order_id), or accepted and its fill being confirmed
    FAILED = "failed"  # a close Panic could not complete (TP/SL left in place)


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """What a signal became. It carries every flag of the request, reduce_only included (DATA-022)."""

    signal_id: str
    symbol: str
    direction: str
    outcome: ExecutionOutcome
    reason: str = ""
    check: str | None = None  # the failed check, when blocked
    order_link_id: str | None = None
    order_id: str | None = None
    side: Side | None = None
    order_type: str | None = None
    qty: Decimal | None = None  # what was sent (rounded)
    filled_qty: Decimal | None = None
    avg_price: Decimal | None = None  # from the venue's order or executions, never a quote (DATA-021)
    price_source: str | None = None  # "order" | "executions"
    reduce_only: bool = False
    take_profit: Decimal | None = None
    stop_loss: Decimal | None = None
    placed_at: datetime | None = None
    finished_at: datetime | None = None
    # REJECTED only: nothing was created and the venue did not refuse the order itself (rate limit,
    # ban, connection refused): a re-send of the same signal is tried again, not answered as a duplicate.
    retryable: bool = False

    @property
    def final(self) -> bool:
        return self.outcome not in (ExecutionOutcome.PENDING,)


class GetExecution(Message):
    """Ask the Executor what a signal became (None: never seen)."""

    signal_id: str


__all__ = [
    "ExecutionOutcome",
    "ExecutionResult",
    "GetExecution",
    "OrderIntent",
    "PortfolioSnapshot",
    "PositionView",
    "RiskCheck",
    "RiskDecision",
]
