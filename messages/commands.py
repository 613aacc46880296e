"""Commands: what someone asks an actor to do."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from pydantic import Field, field_validator, model_validator

from messages.types import Interval, Message, OptPrice, PositiveQty, Symbol, UtcDatetime, now_utc

# Bybit's orderLinkId: at most 36 characters of [A-Za-z0-9_-].
_LINK_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,36}$")


class Subscribe(Message):
    """Add market streams for a symbol to the desired set (kept across reconnects)."""

    symbol: Symbol
    intervals: tuple[Interval, ...] = ()
    tickers: bool = True

    @model_validator(mode="after")
    def _something(self) -> "Subscribe":
        if not self.intervals and not self.tickers:
            raise ValueError("subscribe to at least one kline interval or the ticker")
        return self


class Unsubscribe(Message):
    """Remove streams of a symbol; `intervals` None means every interval."""

    symbol: Symbol
    intervals: tuple[Interval, ...] | None = None
    tickers: bool = True


class Direction(StrEnum):
    LONG = "long"
    SHORT = "short"
    FLAT = "flat"


class Signal(Message):
    """A strategy's wish. Becomes an order only after trading-state, risk and price checks.

    `signal_id` is the idempotency key: the order's orderLinkId derives from
    it, so a signal delivered twice can never place two orders.
    """

    signal_id: str
    symbol: Symbol
    direction: Direction
    # Size: contracts (`qty`) or a USD notional (`usd`); neither means the
    # configured `risk.default_order_usd`. Never both.
    qty: PositiveQty | None = None
    usd: PositiveQty | None = None
    # The price the strategy decided on: the order is refused if the market
    # has moved more than `risk.max_price_deviation_pct` away from it.
    price: OptPrice = None
    take_profit: OptPrice = None
    stop_loss: OptPrice = None
    reason: str = Field("", max_length=200)
    created_at: UtcDatetime = Field(default_factory=now_utc)

    @field_validator("signal_id")
    @classmethod
    def _link_id_safe(cls, v: str) -> str:
        if not _LINK_ID_RE.match(v):
            raise ValueError("signal_id must be 1-36 characters of A-Z a-z 0-9 _ -")
        return v

    @model_validator(mode="after")
    def _coherent(self) -> "Signal":
        if self.direction is Direction.FLAT:
            if self.take_profit is not None or self.stop_loss is not None:
                raise ValueError("a flat signal carries no take-profit or stop-loss")
            if self.qty is not None or self.usd is not None:
                raise ValueError("a flat signal closes the whole position: it takes no qty or usd")
            return self
        if self.qty is not None and self.usd is not None:
            raise ValueError(f"a {self.direction.value} signal takes qty or usd, not both")
        tp, sl = self.take_profit, self.stop_loss
        if tp is not None and sl is not None:
            if self.direction is Direction.LONG and not sl < tp:
                raise ValueError("a long signal needs stop_loss below take_profit")
            if self.direction is Direction.SHORT and not tp < sl:
                raise ValueError("a short signal needs take_profit below stop_loss")
        return self


class ClosePosition(Message):
    """Close one symbol's position: reduce-only close first, then cancel its conditionals.

    Every close goes through the Panic actor, the one place that knows the
    order close-then-cancel (DATA-018); the Executor asks it for FLAT signals.
    `signal_id`, when set, is the correlation id and the orderLinkId seed.
    """

    symbol: Symbol
    reason: str
    signal_id: str | None = None


class CloseOutcome(StrEnum):
    CLOSED = "closed"  # the reduce-only close filled; conditionals cancelled after it
    ALREADY_FLAT = "already_flat"  # nothing to close (position list answered and showed size 0)
    FAILED = "failed"  # the close was refused or unknown: TP/SL left in place


@dataclass(frozen=True, slots=True)
class CloseResult:
    """Panic's answer to ClosePosition. `reduce_only` is always True: a close never adds exposure."""

    symbol: str
    outcome: CloseOutcome
    signal_id: str | None = None
    order_id: str | None = None
    order_link_id: str | None = None
    closed_qty: Decimal | None = None
    avg_price: Decimal | None = None  # from the venue's order or executions, never a quote (DATA-021)
    conditionals_cancelled: int = 0
    error: str | None = None
    reduce_only: bool = True


class Panic(Message):
    """Halt trading, close every position (close before cancel), verify flat."""

    reason: str
    requested_at: UtcDatetime = Field(default_factory=now_utc)


@dataclass(frozen=True, slots=True)
class PanicReport:
    """What a panic did, from command to verified flat. Logged once as `panic.report`.

    `flat` is True only when a REST read after the last close showed every
    position at size 0 and no open order; `time_to_flat_s` is then the time
    from the command to that read. `still_open_*` name what was left.
    """

    reason: str
    started_at: str  # ISO UTC
    flat: bool
    time_to_flat_s: float | None
    duration_s: float
    closed: tuple[CloseResult, ...]
    orders_cancelled: int
    still_open_positions: tuple[str, ...]
    still_open_orders: tuple[str, ...]
    dcp: str
    rounds: int
    errors: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {
            "reason": self.reason,
            "started_at": self.started_at,
            "flat": self.flat,
            "time_to_flat_s": self.time_to_flat_s,
            "duration_s": self.duration_s,
            "closed": [
                {
                    "symbol": c.symbol,
                    "outcome": c.outcome.value,
                    "order_id": c.order_id,
                    "closed_qty": str(c.closed_qty) if c.closed_qty is not None else None,
                    "avg_price": str(c.avg_price) if c.avg_price is not None else None,
                    "conditionals_cancelled": c.conditionals_cancelled,
                    "error": c.error,
                }
                for c in self.closed
            ],
            "orders_cancelled": self.orders_cancelled,
            "still_open_positions": list(self.still_open_positions),
            "still_open_orders": list(self.still_open_orders),
            "dcp": self.dcp,
            "rounds": self.rounds,
            "errors": list(self.errors),
        }


class Flush(Message):
    """Ask the DbWriter to write what it holds now."""

    reason: str = "requested"


class CatchUp(Message):
    """Ask the DbWriter to fetch from the venue what the recent history lacks.

    Told by the DbWriter to itself at start when it has a kline source, so
    a crash or a stopped node leaves no hole behind. The series of `pending`
    (None meaning "every configured series") are caught up on the DbWriter's
    catch-up thread, one after the other, so a stop request is served
    between two series instead of after the whole catch-up.
    """

    reason: str = "start"
    pending: tuple[tuple[str, str], ...] | None = None
    # Outcome per "SYMBOL/interval" so far, carried to the last step's log line.
    done: tuple[tuple[str, str], ...] = ()
