"""POST /v5/order/cancel, /v5/order/cancel-all and /v5/order/amend."""

from __future__ import annotations

from typing import TYPE_CHECKING

from infra.sim.matching import crosses, fill, taker_price
from infra.sim.orders import Order
from infra.sim.params import (
    decimal_param,
    known_symbol,
    level_update,
    linear_symbol,
    optional_ticks,
    price_ticks,
    qty_steps,
    require_linear,
    require_scope,
)
from infra.sim.pushes import push_orders, push_positions, push_wallet
from infra.sim.wire import ORDER_NOT_EXISTS, SimError, param_error

if TYPE_CHECKING:
    from infra.sim.account import Account


def cancel(acct: Account, order: Order, t: int, cancel_type: str) -> None:
    """Bybit ends a conditional order that never triggered as Deactivated, any other as Cancelled."""
    if order.status == "Untriggered":
        acct.close_order(order, "Deactivated", t, cancel_type)
        if order.is_tpsl:
            acct.position_for(order, t).set_level(order.stop_order_type, None)
    else:
        acct.close_order(order, "Cancelled", t, cancel_type)


def cancel_order(acct: Account, p: dict, t: int) -> dict:
    order = _open_order(acct, p, "cancel")
    cancel(acct, order, t, "CancelByUser")
    push_orders(acct, [order], t)
    push_positions(acct, [(order.symbol, order.position_idx)], t)
    push_wallet(acct, t)
    return order.ack()


def cancel_all(acct: Account, p: dict, t: int) -> dict:
    require_linear(p)
    symbol, base, settle = p.get("symbol"), p.get("baseCoin"), p.get("settleCoin")
    require_scope(p)
    known_symbol(p, acct.models)
    flt = p.get("orderFilter")
    stop_type = p.get("stopOrderType")
    if flt not in (None, "", "Order", "StopOrder", "OpenOrder"):
        raise param_error("params error: orderFilter invalid")
    if stop_type and (stop_type != "Stop" or flt != "StopOrder"):
        raise param_error("params error: stopOrderType only supports Stop with orderFilter=StopOrder")
    picked = []
    for order in acct.orders.values():
        if not order.is_open:
            continue
        if symbol and order.symbol != symbol or base and acct.inst(order.symbol).base_coin != base:
            continue
        if settle and settle != "USDT":
            continue
        conditional = order.status == "Untriggered"
        if flt == "Order" and conditional or flt == "StopOrder" and not conditional:
            continue
        if stop_type == "Stop" and order.stop_order_type != "Stop":
            continue
        picked.append(order)
    for order in picked:
        cancel(acct, order, t, "CancelByUser")
    if picked:
        push_orders(acct, picked, t)
        push_positions(acct, [(o.symbol, o.position_idx) for o in picked], t)
        push_wallet(acct, t)
    return {"list": [o.ack() for o in picked], "success": "1"}


def amend_order(acct: Account, p: dict, t: int) -> dict:
    order = _open_order(acct, p, "amend")
    symbol = order.symbol
    inst = acct.inst(symbol)
    changed = False
    qty = decimal_param(p, "qty")
    if qty is not None:
        steps = qty_steps(inst, qty)
        if steps < order.cum_qty:
            raise param_error("params error: qty below the filled qty")
        if steps != order.qty:
            order.qty, changed = steps, True
    price = decimal_param(p, "price")
    if price is not None and order.order_type == "Limit":
        ticks = price_ticks(inst, price, "price")
        if ticks != order.price:
            order.price, changed = ticks, True
    trigger = optional_ticks(inst, p, "triggerPrice")
    if trigger is not None and order.status == "Untriggered" and trigger != order.trigger_price:
        order.trigger_price, changed = trigger, True
    for name, attr in (("takeProfit", "take_profit"), ("stopLoss", "stop_loss")):
        ticks = level_update(inst, decimal_param(p, name), name, getattr(order, attr))
        if getattr(order, attr) != ticks:
            setattr(order, attr, ticks)
            changed = True
    if not changed:
        raise param_error("The order remains unchanged as the parameters entered match the existing ones.")
    order.updated = t
    if order.is_tpsl:
        acct.position_for(order, t).set_level(order.stop_order_type, order.trigger_price)
    if order.status in ("New", "PartiallyFilled"):
        last = acct.last(symbol, t)
        if crosses(order, last):
            fill(acct, order, taker_price(order.side, last), is_maker=False, t=t)
            return order.ack()
    push_orders(acct, [order], t)
    push_positions(acct, [(symbol, order.position_idx)], t)
    return order.ack()


def _open_order(acct: Account, p: dict, action: str) -> Order:
    """The open order that `orderId` (or else `orderLinkId`) names on `symbol`."""
    symbol = linear_symbol(p, acct.models)
    order = _find_order(acct, p)
    if order is None or order.symbol != symbol or not order.is_open:
        raise SimError(ORDER_NOT_EXISTS, f"order not exists or too late to {action}")
    return order


def _find_order(acct: Account, p: dict) -> Order | None:
    oid, link = p.get("orderId"), p.get("orderLinkId")
    if not oid and not link:
        raise param_error("params error: OrderId or orderLinkId is required")
    if oid:
        return acct.orders.get(str(oid))
    found = acct.by_link.get(str(link))
    return acct.orders.get(found) if found else None
