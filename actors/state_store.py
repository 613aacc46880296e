"""StateStore: the single owner of live market and account state.

`LiveState` holds the logic and is tested without threads; `StateStore`
binds it to a mailbox. Readers ask for a `StateSnapshot`, an immutable view.
Freshness is tracked per stream from the moment a message arrives, and a
stream that never delivered has no age at all: "no data yet" is never
"healthy" (DATA-009, DATA-012).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from types import MappingProxyType
from typing import Any, Callable

from actors.base import NodeActor, Role
from messages.account import Execution, Order, Position, Wallet
from messages.market import ClosedBar, Kline, Ticker
from messages.queries import BarKey, GetSnapshot, StateSnapshot


class LiveState:
    """Plain state logic; every method is called on the StateStore's thread."""

    def __init__(self, bar_buffer_len: int = 1000, executions_kept: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        self._bar_buffer_len = bar_buffer_len
        self._clock = clock
        self.tickers: dict[str, Ticker] = {}
        self.klines: dict[BarKey, Kline] = {}
        self.bars: dict[BarKey, deque[ClosedBar]] = {}
        self.wallet: Wallet | None = None
        self.positions: dict[tuple[str, int], Position] = {}
        self.open_orders: dict[str, Order] = {}
        self._executions: OrderedDict[str, Execution] = OrderedDict()
        self._executions_kept = executions_kept
        self.received_at: dict[str, float] = {}
        self.dropped: dict[str, int] = {}

    def _touch(self, stream: str) -> None:
        self.received_at[stream] = self._clock()

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def on_ticker(self, msg: Ticker) -> bool:
        current = self.tickers.get(msg.symbol)
        if msg.is_snapshot:
            self.tickers[msg.symbol] = msg
        elif current is None:
            self._drop("ticker_delta_without_snapshot")
            return False
        else:
            self.tickers[msg.symbol] = current.merge(msg)
        self._touch(f"tickers.{msg.symbol}")
        return True

    def on_kline(self, msg: Kline) -> None:
        key = (msg.symbol, msg.interval)
        current = self.klines.get(key)
        if current is None or msg.start >= current.start:
            self.klines[key] = msg
        if msg.confirm:
            self.on_closed_bar(msg.closed_bar())
        self._touch(f"kline.{msg.interval}.{msg.symbol}")

    def on_closed_bar(self, bar: ClosedBar) -> bool:
        """Append in time order; a repeated bar replaces its twin, an older one is ignored."""
        key = (bar.symbol, bar.interval)
        buf = self.bars.get(key)
        if buf is None:
            # One configured size for every key (DATA-008: no silent default).
            buf = self.bars[key] = deque(maxlen=self._bar_buffer_len)
        if buf and bar.open_time <= buf[-1].open_time:
            if bar.open_time == buf[-1].open_time:
                buf[-1] = bar
                return True
            self._drop("bar_out_of_order")
            return False
        buf.append(bar)
        return True

    def on_wallet(self, msg: Wallet) -> None:
        if self.wallet is None or msg.ts >= self.wallet.ts:
            self.wallet = msg
        self._touch("wallet")

    def on_position(self, msg: Position) -> None:
        key = (msg.symbol, msg.position_idx)
        current = self.positions.get(key)
        if current is not None and current.seq is not None and msg.seq is not None and msg.seq < current.seq:
            self._drop("position_out_of_order")
            return
        self.positions[key] = msg
        self._touch("position")

    def on_order(self, msg: Order) -> None:
        if msg.order_status.is_open:
            self.open_orders[msg.order_id] = msg
        else:
            self.open_orders.pop(msg.order_id, None)
        self._touch("order")

    def on_execution(self, msg: Execution) -> bool:
        """Record a fill once: the venue may push the same execution twice."""
        self._touch("execution")
        if msg.exec_id in self._executions:
            self._drop("duplicate_execution")
            return False
        self._executions[msg.exec_id] = msg
        while len(self._executions) > self._executions_kept:
            self._executions.popitem(last=False)
        return True

    def snapshot(self) -> StateSnapshot:
        return StateSnapshot(
            tickers=MappingProxyType(dict(self.tickers)),
            klines=MappingProxyType(dict(self.klines)),
            bars=MappingProxyType({k: tuple(v) for k, v in self.bars.items()}),
            wallet=self.wallet,
            positions=MappingProxyType(dict(self.positions)),
            open_orders=MappingProxyType(dict(self.open_orders)),
            recent_executions=tuple(self._executions.values()),
            received_at=MappingProxyType(dict(self.received_at)),
            taken_at=self._clock(),
        )


class StateStore(NodeActor):
    role = Role.STATE_STORE

    def __init__(self, ctx):
        self._state = LiveState(bar_buffer_len=ctx.config.node.state.bar_buffer_len)
        super().__init__(ctx)

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        s = self._state
        return {
            Ticker: s.on_ticker,
            Kline: s.on_kline,
            ClosedBar: s.on_closed_bar,
            Wallet: s.on_wallet,
            Position: s.on_position,
            Order: s.on_order,
            Execution: s.on_execution,
            GetSnapshot: lambda _: s.snapshot(),
        }
