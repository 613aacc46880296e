"""A position's take-profit and stop-loss: conditional reduce-only market orders that follow it.

They are "Full" mode: each covers the whole position, resizes with it and
goes when the position goes flat. The levels also live on the position
(`takeProfit` / `stopLoss` in its wire shape), kept in step with the orders.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from infra.sim.orders import Order, Position
from infra.sim.wire import param_error

if TYPE_CHECKING:
    from infra.sim.account import Account


def check_tpsl(side: str, basis: int, tp: int | None, sl: int | None) -> None:
    long = side == "Buy"
    if tp is not None and (tp <= basis if long else tp >= basis):
        raise param_error(f"TakeProfit set for {'Buy' if long else 'Sell'} position should be "
                          f"{'higher' if long else 'lower'} than base_price")
    if sl is not None and (sl >= basis if long else sl <= basis):
        raise param_error(f"StopLoss set for {'Buy' if long else 'Sell'} position should be "
                          f"{'lower' if long else 'higher'} than base_price")


def tpsl_orders(acct: Account, pos: Position) -> list[Order]:
    return [o for o in acct.open_orders.values() if o.status == "Untriggered" and o.symbol == pos.symbol
            and o.position_idx == pos.idx and o.is_tpsl]


def set_position_tpsl(acct: Account, pos: Position, tp: int | None, sl: int | None, tp_by: str, sl_by: str, t: int,
                      cancel_missing: bool = False) -> list[Order]:
    """Create, move or (with `cancel_missing`) remove the position's TP/SL orders."""
    touched = []
    existing = {o.stop_order_type: o for o in tpsl_orders(acct, pos)}
    for kind, level, by in (("TakeProfit", tp, tp_by), ("StopLoss", sl, sl_by)):
        current = existing.get(kind)
        if level is None:
            if cancel_missing and current is not None:
                acct.close_order(current, "Deactivated", t, "CancelByUser")
                touched.append(current)
                pos.set_level(kind, None)
            continue
        pos.set_level(kind, level)
        long = pos.side == "Buy"
        direction = (1 if long else 2) if kind == "TakeProfit" else (2 if long else 1)
        if current is not None:
            current.trigger_price = level
            current.trigger_direction = direction
            current.trigger_by = by or "LastPrice"
            current.qty = pos.size
            current.updated = t
            touched.append(current)
            continue
        order = Order(
            order_id=acct.ids.uuid("order"), link_id="", symbol=pos.symbol,
            side="Sell" if long else "Buy", order_type="Market", qty=pos.size, price=None, tif="GTC",
            reduce_only=True, close_on_trigger=True, position_idx=pos.idx, created=t, seq=acct.next_seq(),
            updated=t, status="Untriggered", stop_order_type=kind, trigger_price=level,
            trigger_direction=direction, trigger_by=by or "LastPrice", tpsl_mode="Full",
            create_type="CreateByTakeProfit" if kind == "TakeProfit" else "CreateByStopLoss",
            last_price_on_created=acct.last(pos.symbol, t),
        )
        acct.add(order)
        touched.append(order)
    return touched


def resize_tpsl(acct: Account, pos: Position, t: int) -> list[Order]:
    """Full-mode TP/SL cover the whole position: follow its size."""
    touched = []
    for order in tpsl_orders(acct, pos):
        if pos.size and order.qty != pos.size:
            order.qty = pos.size
            order.updated = t
            touched.append(order)
    return touched


def clear_position_orders(acct: Account, pos: Position, t: int) -> list[Order]:
    """A flat position takes its TP/SL and resting reduce-only orders with it."""
    touched = []
    for order in list(acct.open_orders.values()):
        if not order.is_open or order.symbol != pos.symbol or order.position_idx != pos.idx:
            continue
        if order.is_tpsl:
            acct.close_order(order, "Deactivated", t, "CancelByTpSlTsClear")
            touched.append(order)
        elif order.reduce_only and order.status in ("New", "PartiallyFilled"):
            acct.close_order(order, "Cancelled", t, "CancelByReduceOnly")
            touched.append(order)
    pos.take_profit = pos.stop_loss = None
    return touched
