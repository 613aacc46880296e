"""Test doubles for the trading actors: peers that record, a gateway and a reader that count."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Callable, Mapping

import pykka

from infra.bybit import OrderAck, Resolution
from infra.bybit.instruments import Instrument
from infra.market_reader import Quote, StaleMarketData
from messages.account import Execution, Order, Position, Wallet
from messages.queries import GetSnapshot, StateSnapshot, TickerView
from messages.trading import GetTradingView, PortfolioSnapshot, TradingView
from messages.types import Side

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


class Peer(pykka.ThreadingActor):
    """A mocked peer: records every message; answers with `reply(message)` (None by default)."""

    use_daemon_thread = True

    def __init__(self, reply: Callable[[Any], Any] | None = None):
        super().__init__()
        self.reply = reply or (lambda m: None)
        self.received: list[Any] = []
        self._lock = threading.Lock()

    def on_receive(self, message: Any) -> Any:
        with self._lock:
            self.received.append(message)
        return self.reply(message)

    def got(self, kind: type) -> list[Any]:
        with self._lock:
            return [m for m in self.received if isinstance(m, kind)]


def wallet(equity: str = "10000", balance: str | None = None, available: str | None = None) -> Wallet:
    return Wallet(
        account_type="UNIFIED",
        total_equity=Decimal(equity),
        total_wallet_balance=Decimal(balance if balance is not None else equity),
        total_available_balance=Decimal(available) if available is not None else None,
        ts=T0,
    )


def position(symbol: str, side: Side | None, size: str, price: str = "60000") -> Position:
    return Position(symbol=symbol, side=side, size=Decimal(size),
                    entry_price=Decimal(price) if side else None, mark_price=Decimal(price) if side else None)


def snapshot(w: Wallet | None = None, positions: tuple[Position, ...] = (), executions: tuple[Execution, ...] = (),
             orders: Mapping[str, Order] | None = None) -> StateSnapshot:
    return StateSnapshot(
        tickers=MappingProxyType({}), klines=MappingProxyType({}), bars=MappingProxyType({}),
        wallet=w, positions=MappingProxyType({(p.symbol, 0): p for p in positions}),
        open_orders=MappingProxyType(dict(orders or {})), recent_executions=tuple(executions),
        received_at=MappingProxyType({}), taken_at=0.0,
    )


def trading_view(state: StateSnapshot, symbol: str) -> TradingView:
    """What the StateStore answers to GetTradingView, from a snapshot a test holds."""
    return TradingView(portfolio=PortfolioSnapshot.from_state(state),
                       ticker=TickerView(ticker=state.tickers.get(symbol), age_s=state.age_s(f"tickers.{symbol}")))


def answer_state(state: Callable[[], StateSnapshot]) -> Callable[[Any], Any]:
    """A mocked StateStore's reply: the snapshot for GetSnapshot, its trading view for GetTradingView."""

    def reply(message: Any) -> Any:
        if isinstance(message, GetSnapshot):
            return state()
        if isinstance(message, GetTradingView):
            return trading_view(state(), message.symbol)
        return None

    return reply


def execution(link: str, order_id: str, qty: str, price: str, exec_id: str, symbol: str = "BTCUSDT",
              side: Side = Side.BUY, at: datetime | None = None) -> Execution:
    """A trade execution, by default timed now (the Executor looks at recent ones only)."""
    return Execution(exec_id=exec_id, order_id=order_id, order_link_id=link, symbol=symbol, side=side,
                     exec_type="Trade", order_type="Market", exec_price=Decimal(price), exec_qty=Decimal(qty),
                     exec_fee=Decimal("0.1"), exec_time=at or datetime.now(timezone.utc))


def btc_instrument(symbol: str = "BTCUSDT") -> Instrument:
    return Instrument(symbol=symbol, status="Trading", tick_size=Decimal("0.1"), min_price=Decimal("0.1"),
                      max_price=Decimal("1999999"), qty_step=Decimal("0.001"), min_qty=Decimal("0.001"),
                      max_qty=Decimal("100"), max_market_qty=Decimal("100"), min_notional=Decimal("5"),
                      min_leverage=Decimal("1"), max_leverage=Decimal("100"), leverage_step=Decimal("0.01"))


class FakeReader:
    """A MarketReader that serves set quotes and counts where each answer came from."""

    def __init__(self, price: str = "60000", mark: str | None = None, funding: str | None = "0.0001",
                 source: str = "ws"):
        self.quotes: dict[str, Quote] = {}
        self.calls = 0
        self.rest_answers = 0
        self.stale = False
        self.default = (price, mark or price, funding, source)

    def quote(self, symbol: str, *, max_age_s: float | None = None, stream: Any = None) -> Quote:
        self.calls += 1
        if self.stale:
            raise StaleMarketData(symbol, "last_price", 99.0, max_age_s)
        q = self.quotes.get(symbol)
        if q is None:
            price, mark, funding, source = self.default
            q = Quote(symbol=symbol, last_price=Decimal(price), mark_price=Decimal(mark),
                      funding_rate=None if funding is None else Decimal(funding), next_funding_time=None,
                      source=source, age_s=0.1)  # type: ignore[arg-type]
        if q.source == "rest":
            self.rest_answers += 1
        return q


@dataclass
class FakeGateway:
    """Counts every call by name; `create_order` acks (or runs `on_create`)."""

    calls: dict[str, int] = field(default_factory=dict)
    created: list[Any] = field(default_factory=list)
    on_create: Callable[[Any], Any] | None = None
    orders: dict[str, Order] = field(default_factory=dict)  # by orderLinkId, for get_order
    executions: list[Execution] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    instruments: dict[str, Instrument] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _count(self, name: str) -> None:
        with self.lock:
            self.calls[name] = self.calls.get(name, 0) + 1

    def trading_problems(self) -> list[str]:
        return list(self.problems)

    def instrument(self, symbol: str) -> Instrument:
        self._count("instrument")
        return self.instruments.get(symbol) or btc_instrument(symbol)

    def create_order(self, req: Any) -> OrderAck:
        self._count("create_order")
        with self.lock:
            self.created.append(req)
        if self.on_create is not None:
            return self.on_create(req)
        return self.accepted(req)

    @staticmethod
    def accepted(req: Any) -> OrderAck:
        """The venue's plain acknowledgement of `req` (order id "oid-" + its orderLinkId)."""
        return OrderAck(symbol=req.symbol, order_id=f"oid-{req.order_link_id}", order_link_id=req.order_link_id,
                        resolution=Resolution.ACKNOWLEDGED, qty=req.qty, reduce_only=req.reduce_only)

    def get_order(self, symbol: str, *, order_link_id: str | None = None, order_id: str | None = None) -> Order | None:
        self._count("get_order")
        return self.orders.get(order_link_id or "")

    def get_executions(self, **kwargs: Any) -> list[Execution]:
        self._count("get_executions")
        return list(self.executions)

    def rest_calls(self) -> dict[str, int]:
        """Every call that would have gone to the venue except placing the order itself."""
        with self.lock:
            return {k: v for k, v in self.calls.items() if k not in ("create_order", "instrument")}
