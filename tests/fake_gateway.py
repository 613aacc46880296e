"""A gateway double for the close / panic / reconcile logic: records every call in order.

It mimics what the logic relies on: a reduce-only market close fills at
once and a flat position takes its TP/SL with it (as Bybit does), a
symbol read of an unknown symbol is flat, and failures can be scripted.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from itertools import count
from typing import Any

from infra.bybit.entry_gate import EntryGate
from infra.bybit.errors import ExchangeError, MalformedResponse, Rejected
from infra.bybit.models import CancelAck, DcpInfo, OrderAck, OrderRequest, Resolution
from messages.account import Order, OrderStatus, Position

_T0 = int(datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)


def position(symbol: str, side: str | None, size: str, price: str = "100") -> Position:
    return Position.from_bybit({"symbol": symbol, "positionIdx": 0, "side": side or "", "size": size,
                                "avgPrice": price if side else "0"})


def order(symbol: str, oid: str, *, side: str = "Sell", status: str = "Untriggered", stop: str = "StopLoss",
          reduce_only: bool = True, qty: str = "1", created_ms: int = _T0) -> Order:
    return Order.from_bybit({
        "orderId": oid, "symbol": symbol, "side": side, "orderType": "Market", "orderStatus": status, "qty": qty,
        "reduceOnly": reduce_only, "closeOnTrigger": reduce_only, "stopOrderType": stop, "triggerPrice": "90",
        "createdTime": str(created_ms),
    })


class FakeGateway:
    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.positions: dict[str, Position] = {}
        self.orders: dict[str, Order] = {}
        self.fail_creates: list[ExchangeError] = []  # popped one per create
        self.partial_fill: dict[str, Decimal] = {}  # symbol -> qty filled by the next close
        self.fail_position_reads: set[str] = set()  # symbols whose strict read fails
        self.empty_position_list = False
        self.fail_position_list = False
        self.dcp_available = True
        self._ids = count(1)
        self.entries = EntryGate()  # the real one: the panic's halt and wait for opening orders

    # --- scripting ---------------------------------------------------------------------

    def open(self, symbol: str, side: str, size: str, *, with_stops: bool = True) -> None:
        self.positions[symbol] = position(symbol, side, size)
        if with_stops:
            close_side = "Sell" if side == "Buy" else "Buy"
            for stop in ("TakeProfit", "StopLoss"):
                oid = f"{symbol}-{stop}"
                self.orders[oid] = order(symbol, oid, side=close_side, stop=stop, qty=size)

    def stops(self, symbol: str) -> list[Order]:
        return [o for o in self.orders.values() if o.symbol == symbol and o.is_conditional]

    def on_lane(self, lane: Any) -> "FakeGateway":
        return self

    # --- reads -------------------------------------------------------------------------

    def get_position(self, symbol: str) -> Position:
        self.calls.append(("get_position", symbol))
        if symbol in self.fail_position_reads:
            raise MalformedResponse(f"no position row for {symbol}")
        return self.positions.get(symbol) or position(symbol, None, "0")

    def get_open_positions(self) -> list[Position]:
        self.calls.append(("get_open_positions",))
        if self.fail_position_list:
            raise MalformedResponse("position list failed")
        if self.empty_position_list:
            return []
        return [p for p in self.positions.values() if p.is_open]

    def get_open_orders(self, symbol: str | None = None, *, order_filter: str | None = None) -> list[Order]:
        self.calls.append(("get_open_orders", symbol))
        return [o for o in self.orders.values() if symbol is None or o.symbol == symbol]

    def get_order(self, symbol: str, *, order_id: str | None = None, order_link_id: str | None = None) -> Order | None:
        self.calls.append(("get_order", symbol, order_id))
        return self._filled.get(order_id)

    def get_executions(self, **kwargs: Any) -> list:
        self.calls.append(("get_executions",))
        return []

    def query_dcp(self) -> DcpInfo:
        self.calls.append(("query_dcp",))
        return DcpInfo(available=self.dcp_available, enabled=True, window_s=10)

    # --- writes --------------------------------------------------------------------------

    def arm_dcp(self, window_s: int) -> None:
        self.calls.append(("arm_dcp", window_s))

    def halt_entries(self, reason: str) -> Any:
        self.calls.append(("halt_entries",))
        return self.entries.halted(reason)

    def settle_entries(self, timeout_s: float) -> tuple[set[str], bool]:
        return self.entries.settle(timeout_s)

    def create_order(self, req: OrderRequest) -> OrderAck:
        self.calls.append(("create_order", req.symbol, req.side.value, str(req.qty), req.reduce_only))
        if self.fail_creates:
            raise self.fail_creates.pop(0)
        pos = self.positions.get(req.symbol)
        if req.reduce_only and (pos is None or not pos.is_open):
            raise Rejected(110017, "current position is zero, cannot fix reduce-only order qty")
        oid = f"close-{next(self._ids)}"
        filled = min(self.partial_fill.pop(req.symbol, req.qty), pos.size if pos else req.qty)
        left = (pos.size - filled) if pos else Decimal(0)
        self.positions[req.symbol] = position(req.symbol, pos.side.value if left and pos and pos.side else None,
                                              str(left))
        if left == 0:  # flat: the venue takes the position's TP/SL with it
            for o in self.stops(req.symbol):
                if o.stop_order_type in ("TakeProfit", "StopLoss"):
                    del self.orders[o.order_id]
        status = "Filled" if filled == req.qty else "PartiallyFilledCanceled"
        self._filled[oid] = Order.from_bybit({
            "orderId": oid, "orderLinkId": req.order_link_id, "symbol": req.symbol, "side": req.side.value,
            "orderType": "Market", "orderStatus": status, "qty": str(req.qty), "cumExecQty": str(filled),
            "avgPrice": "101", "reduceOnly": True, "createdTime": str(_T0),
        })
        return OrderAck(symbol=req.symbol, order_id=oid, order_link_id=req.order_link_id,
                        resolution=Resolution.ACKNOWLEDGED, qty=req.qty, reduce_only=True)

    def cancel_all(self, symbol: str, *, order_filter: str | None = None) -> list[CancelAck]:
        self.calls.append(("cancel_all", symbol, order_filter))
        picked = [o for o in self.orders.values() if o.symbol == symbol and (
            order_filter is None or (order_filter == "StopOrder") == (o.order_status is OrderStatus.UNTRIGGERED))]
        for o in picked:
            del self.orders[o.order_id]
        return [CancelAck(symbol=symbol, order_id=o.order_id) for o in picked]

    def cancel_order(self, symbol: str, *, order_id: str | None = None, order_link_id: str | None = None) -> CancelAck:
        self.calls.append(("cancel_order", symbol, order_id))
        if order_id not in self.orders:
            raise Rejected(110001, "order not exists or too late to cancel")
        del self.orders[order_id]
        return CancelAck(symbol=symbol, order_id=order_id)

    def set_trading_stop(self, symbol: str, **kwargs: Any) -> bool:
        self.calls.append(("set_trading_stop", symbol, tuple(sorted((k, str(v)) for k, v in kwargs.items() if v is not None))))
        return True

    @property
    def _filled(self) -> dict[str, Order]:
        if not hasattr(self, "_filled_store"):
            self._filled_store: dict[str, Order] = {}
        return self._filled_store

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]
