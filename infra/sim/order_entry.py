"""POST /v5/order/create: every check Bybit makes, in Bybit's order, then the order meets the book.

An order id and a sequence number are drawn before the last checks, so a
create refused late still uses them up; the ids a seed produces depend on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from infra.logging import get_logger
from infra.sim.matching import activate
from infra.sim.orders import TAKER_FEE, Order
from infra.sim.params import (
    bool_param,
    decimal_param,
    linear_symbol,
    optional_ticks,
    position_idx,
    price_ticks,
    qty_steps,
)
from infra.sim.tpsl import check_tpsl
from infra.sim.wallet import available
from infra.sim.wire import (
    DUPLICATE_ORDER_LINK_ID,
    INSUFFICIENT_BALANCE,
    NOTIONAL_TOO_LOW,
    PRICE_OUT_OF_RANGE,
    REDUCE_ONLY_VIOLATION,
    SimError,
    param_error,
)

if TYPE_CHECKING:
    from infra.sim.account import Account

log = get_logger("sim")

_LINK_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def create_order(acct: Account, p: dict, t: int) -> dict:
    faults = acct.faults.state
    symbol = linear_symbol(p, acct.models)
    inst = acct.inst(symbol)
    side = p.get("side")
    if side not in ("Buy", "Sell"):
        raise param_error("params error: side invalid")
    order_type = p.get("orderType")
    if order_type not in ("Market", "Limit"):
        raise param_error("params error: orderType invalid")
    qty = decimal_param(p, "qty", required=True)
    assert qty is not None
    link = str(p.get("orderLinkId") or "")
    if len(link) > 36 or not set(link) <= _LINK_ID_CHARS:
        raise param_error("params error: orderLinkId invalid")
    if link and link in acct.by_link:
        raise SimError(DUPLICATE_ORDER_LINK_ID, "OrderLinkedID is duplicate")
    if faults.fail_creates.take():
        code, msg = faults.fail_creates.value
        raise SimError(code, msg)
    reduce_only = bool_param(p, "reduceOnly")
    close_on_trigger = bool_param(p, "closeOnTrigger")
    idx = position_idx(p, acct.position_keys(symbol))
    steps = qty_steps(inst, qty)
    max_qty = inst.max_mkt_qty if order_type == "Market" else inst.max_qty
    if steps > inst.to_steps(max_qty):
        raise param_error("The number of contracts exceeds maximum limit allowed")
    last = acct.last(symbol, t)
    price = None
    tif = str(p.get("timeInForce") or "GTC")
    if order_type == "Limit":
        price_d = decimal_param(p, "price", required=True)
        assert price_d is not None
        price = price_ticks(inst, price_d, "price")
        if not last * 0.9 <= price <= last * 1.1:
            raise SimError(PRICE_OUT_OF_RANGE, "Order price is out of permissible range")
        if tif not in ("GTC", "IOC", "FOK", "PostOnly"):
            raise param_error("params error: timeInForce invalid")
    else:
        tif = "IOC"
    ref_price = price if price is not None else last + (1 if side == "Buy" else 0)
    if not reduce_only and inst.qty_dec(steps) * inst.price_dec(ref_price) < inst.min_notional:
        raise SimError(NOTIONAL_TOO_LOW, f"The order value must be at least {inst.min_notional} USDT")
    tp = optional_ticks(inst, p, "takeProfit")
    sl = optional_ticks(inst, p, "stopLoss")
    if reduce_only and (tp or sl):
        raise param_error("TP/SL cannot be set on a reduce-only order")
    trigger = optional_ticks(inst, p, "triggerPrice")
    order = Order(
        order_id=acct.ids.uuid("order"), link_id=link, symbol=symbol, side=side, order_type=order_type,
        qty=steps, price=price, tif=tif, reduce_only=reduce_only, close_on_trigger=close_on_trigger,
        position_idx=idx, created=t, seq=acct.next_seq(), updated=t, take_profit=tp, stop_loss=sl,
        last_price_on_created=last,
    )
    if tp or sl:
        order.tpsl_mode = "Full"
        order.tp_trigger_by = str(p.get("tpTriggerBy") or "LastPrice") if tp else ""
        order.sl_trigger_by = str(p.get("slTriggerBy") or "LastPrice") if sl else ""
        basis = price if price is not None else last
        check_tpsl(side, basis, tp, sl)
    if trigger:
        direction = int(p.get("triggerDirection") or 0)
        by = str(p.get("triggerBy") or "LastPrice")
        current = acct.price_of(symbol, by, t)
        if direction not in (1, 2):
            raise param_error("params error: triggerDirection is required for a conditional order")
        if direction == 1 and trigger <= current or direction == 2 and trigger >= current:
            raise param_error(
                f"expect {'Rising' if direction == 1 else 'Falling'}, but trigger_price[{inst.price_str(trigger)}] "
                f"{'<=' if direction == 1 else '>='} current[{inst.price_str(current)}]"
            )
        order.trigger_price, order.trigger_direction, order.trigger_by = trigger, direction, by
        order.stop_order_type, order.status = "Stop", "Untriggered"
    _check_reduce_only(acct, order, t)
    if not reduce_only and not trigger:
        need = inst.qty_dec(steps) * inst.price_dec(ref_price) * (1 / acct.leverage[symbol] + TAKER_FEE)
        if need > available(acct, t):
            raise SimError(INSUFFICIENT_BALANCE, "ab not enough for new order")
    if order_type == "Market" and faults.zero_avg_price_next_market:
        order.zero_avg_reads = faults.zero_avg_price_next_market
        faults.zero_avg_price_next_market = 0
    acct.add(order)
    if link:
        acct.by_link[link] = order.order_id
    log.debug("sim.order.created", order_id=order.order_id, symbol=symbol, side=side, type=order_type)
    activate(acct, order, t)
    return order.ack()


def _check_reduce_only(acct: Account, order: Order, t: int) -> None:
    pos = acct.position_for(order, t)
    if acct.hedge[order.symbol]:
        opens = (order.position_idx == 1) == (order.side == "Buy")
        if not opens and not order.reduce_only:
            raise param_error("position idx not match position mode")
    if not order.reduce_only:
        return
    if pos.size == 0:
        raise SimError(REDUCE_ONLY_VIOLATION, "current position is zero, cannot fix reduce-only order qty")
    if pos.side == order.side:
        raise SimError(REDUCE_ONLY_VIOLATION, "reduce-only order has same side with current position")
