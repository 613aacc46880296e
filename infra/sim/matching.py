"""An order meets the book, and what a fill does to the account.

The book is the model's last price: the bid is the last price, the ask one
tick above. Market orders and crossing limit orders fill at once as taker;
PostOnly orders that would cross, and IOC/FOK orders that would not, are
cancelled; the rest rest and fill as maker when the price path reaches them
(see triggers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from infra.logging import get_logger
from infra.sim.ledger import apply_fill, closed_pnl_row, realise, trade_execution
from infra.sim.orders import MAKER_FEE, TAKER_FEE, Order
from infra.sim.pushes import push_execution, push_orders, push_positions, push_wallet
from infra.sim.tpsl import clear_position_orders, resize_tpsl, set_position_tpsl

if TYPE_CHECKING:
    from infra.sim.account import Account

log = get_logger("sim")


def taker_price(side: str, last: int) -> int:
    """A buy lifts the ask, a sell hits the bid."""
    return last + 1 if side == "Buy" else last


def crosses(order: Order, last: int) -> bool:
    """A limit order that would trade against the book at once."""
    assert order.price is not None
    return order.price >= last + 1 if order.side == "Buy" else order.price <= last


def activate(acct: Account, order: Order, t: int) -> None:
    """A new (or just triggered) order meets the book."""
    if order.status == "Untriggered":
        push_orders(acct, [order], t)
        push_positions(acct, [(order.symbol, order.position_idx)], t)
        return
    symbol = order.symbol
    last = acct.last(symbol, t)
    if order.order_type == "Market":
        fill(acct, order, taker_price(order.side, last), is_maker=False, t=t)
        return
    if crosses(order, last):
        if order.tif == "PostOnly":
            _refuse(acct, order, "EC_PostOnlyWillTakeLiquidity", "CancelByUser", t)
            return
        fill(acct, order, taker_price(order.side, last), is_maker=False, t=t)
        return
    if order.tif in ("IOC", "FOK"):
        _refuse(acct, order, "EC_NoImmediateQtyToFill", "CancelByUser", t)
        return
    push_orders(acct, [order], t)
    push_positions(acct, [(symbol, order.position_idx)], t)
    push_wallet(acct, t)


def fill(acct: Account, order: Order, price: int, is_maker: bool, t: int) -> None:
    """Fill what is left of `order` at `price`; a reduce-only order only as far as it reduces the position."""
    inst = acct.inst(order.symbol)
    pos = acct.position_for(order, t)
    qty = order.qty - order.cum_qty
    if order.reduce_only or order.close_on_trigger:
        if pos.size == 0 or pos.side == order.side:
            _refuse(acct, order, "EC_ReduceOnlyRule", "CancelByReduceOnly", t)
            return
        qty = min(qty, pos.size)
    price_d = inst.price_dec(price)
    qty_d = inst.qty_dec(qty)
    value = qty_d * price_d
    rate = MAKER_FEE if is_maker else TAKER_FEE
    fee = value * rate
    pnl, closed, open_fee_share, entry_avg = apply_fill(pos, order.side, qty, value, fee, inst)
    realise(acct, pos, pnl - fee, t)
    order.cum_qty += qty
    order.cum_value += value
    order.cum_fee += fee
    order.updated = t
    done = order.cum_qty >= order.qty or order.order_type == "Market" or order.reduce_only or order.close_on_trigger
    if closed:
        net = pnl - fee - open_fee_share
        order.closed_pnl += net
        acct.closed_pnl.append(closed_pnl_row(order, inst, closed, entry_avg, price_d, net, open_fee_share, fee,
                                              pos.leverage, t))
    if done:
        acct.close_order(order, "Filled", t)
    else:
        order.status = "PartiallyFilled"
    execution = trade_execution(acct, order, inst, qty, price, value, fee, rate, is_maker, closed, pnl, t)
    touched = [order]
    if pos.size == 0:
        touched += clear_position_orders(acct, pos, t)
    elif order.take_profit or order.stop_loss:
        if not closed:
            touched += set_position_tpsl(acct, pos, order.take_profit, order.stop_loss, order.tp_trigger_by,
                                         order.sl_trigger_by, t)
    touched += resize_tpsl(acct, pos, t)
    push_execution(acct, execution, t)
    push_orders(acct, dict.fromkeys(touched), t)
    push_positions(acct, [(pos.symbol, pos.idx)], t)
    push_wallet(acct, t)
    log.debug("sim.order.filled", order_id=order.order_id, qty=str(qty_d), price=str(price_d))


def _refuse(acct: Account, order: Order, reason: str, cancel_type: str, t: int) -> None:
    """An accepted order that cannot trade as asked ends cancelled, with Bybit's reject reason."""
    order.reject_reason = reason
    acct.close_order(order, "Cancelled", t, cancel_type)
    push_orders(acct, [order], t)
