"""The simulated UNIFIED account's state, shared by the modules that act on it.

`Account` is what the venue remembers about the one account it serves:
balance, orders, positions, position modes and leverage, the execution and
closed-PnL records, the disconnect-cancel-all setting and the sequence
counter, plus links to what it trades on (the market models) and to where
its ids come from, its pushes go and its faults are switched. It has no
trading logic; each concern lives in a module of its own that takes the
account as its first argument:

    order_entry        POST /v5/order/create: checks, then the order meets the book
    matching           an order meets the book; fills and what they do to the account
    ledger             position accounting: entry, realised PnL, execution and closed-PnL records
    tpsl               a position's take-profit / stop-loss orders
    triggers           the moving price: conditional orders trigger, resting limits fill
    cancel_amend       cancel, cancel-all, amend
    position_settings  trading-stop, leverage, position mode
    listings           the REST lists: orders, executions, closed PnL, positions, wallet, fees, key
    wallet             margins and the wallet snapshot
    pushes             the private topics `order`, `position`, `wallet`, `execution`
    funding            funding settlement at 00/08/16 UTC
    dcp                disconnect-cancel-all

Everything runs on the simulator's loop thread, so none of it locks.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any, Callable

from infra.sim.ids import IdSource
from infra.sim.instruments import Instrument
from infra.sim.market import SymbolModel
from infra.sim.orders import Execution, Order, Position

if TYPE_CHECKING:
    from infra.sim.faults import Faults

DEFAULT_LEVERAGE = Decimal("10")

Push = Callable[[str, list[dict], int], None]


class Account:
    def __init__(self, models: dict[str, SymbolModel], ids: IdSource, faults: "Faults", push: Push,
                 dcp_available: bool, starting_balance: Decimal):
        self.models = models
        self.ids = ids
        self.faults = faults
        self.push = push
        self.dcp_available = dcp_available
        self.balance = Decimal(starting_balance)
        self.cum_realised = Decimal(0)
        self.orders: dict[str, Order] = {}
        self.open_orders: dict[str, Order] = {}  # the subset the market has to watch
        self.by_link: dict[str, str] = {}
        self.closed_ids: list[str] = []  # in closing order, for openOnly=1
        self.positions: dict[tuple[str, int], Position] = {}
        self.hedge: dict[str, bool] = {s: False for s in models}
        self.leverage: dict[str, Decimal] = {s: DEFAULT_LEVERAGE for s in models}
        self.executions: list[Execution] = []
        self.closed_pnl: list[dict] = []
        self.dcp_window_s = 10
        self.dcp_conns: dict[Any, None] = {}
        self.dcp_armed = False
        self.dcp_gone_since: int | None = None
        self.withdraw_permission = False
        # The venue's own record of every order's birth and end, in the order they happened,
        # with the position size at that moment: what tests check ordering invariants against.
        self.order_log: list[dict[str, Any]] = []
        self._seq = 0

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # --- the market, in ticks -------------------------------------------------------------

    def inst(self, symbol: str) -> Instrument:
        return self.models[symbol].inst

    def last(self, symbol: str, t: int) -> int:
        return self.models[symbol].last_ticks(t)

    def mark(self, symbol: str, t: int) -> int:
        model = self.models[symbol]
        return model.mark_ticks(t, model.last_ticks(t))

    def price_of(self, symbol: str, by: str, t: int) -> int:
        model = self.models[symbol]
        last = model.last_ticks(t)
        if by == "MarkPrice":
            return model.mark_ticks(t, last)
        if by == "IndexPrice":
            return model.index_ticks(t, last)
        return last

    # --- positions ---------------------------------------------------------------------------

    def position(self, symbol: str, idx: int, t: int) -> Position:
        key = (symbol, idx)
        pos = self.positions.get(key)
        if pos is None:
            pos = self.positions[key] = Position(symbol, idx, self.leverage[symbol], created=t, seq=self.next_seq())
        return pos

    def position_for(self, order: Order, t: int) -> Position:
        return self.position(order.symbol, order.position_idx, t)

    def position_keys(self, symbol: str) -> list[int]:
        """The positionIdx values of the symbol's position mode: 0 one-way, 1 / 2 hedge buy / sell side."""
        return [1, 2] if self.hedge[symbol] else [0]

    # --- orders --------------------------------------------------------------------------------

    def add(self, order: Order) -> None:
        self.orders[order.order_id] = order
        self.open_orders[order.order_id] = order
        self._record("created", order, order.created)

    def close_order(self, order: Order, status: str, t: int, cancel_type: str | None = None) -> None:
        self.open_orders.pop(order.order_id, None)
        order.status = status
        order.updated = t
        if cancel_type:
            order.cancel_type = cancel_type
        self.closed_ids.append(order.order_id)
        self._record(status, order, t)

    def _record(self, event: str, order: Order, t: int) -> None:
        pos = self.positions.get((order.symbol, order.position_idx))
        self.order_log.append({
            "n": len(self.order_log) + 1,
            "t": t,
            "event": event,
            "order_id": order.order_id,
            "order_link_id": order.link_id,
            "symbol": order.symbol,
            "side": order.side,
            "stop_order_type": order.stop_order_type,
            "reduce_only": order.reduce_only,
            "cancel_type": order.cancel_type,
            "position_size": pos.size if pos is not None else 0,
        })
