"""Position accounting: what a fill does to a position, and the records it leaves.

A position keeps its entry value and the fees paid opening it; closing part
of it realises the price difference against the average entry, less the
closing fee and the matching share of the opening fee. Every fill and every
funding payment leaves an execution record; every close also leaves a
closed-PnL record.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from infra.sim.instruments import Instrument
from infra.sim.orders import Execution, Order, Position, money
from infra.sim.wire import dec_str

if TYPE_CHECKING:
    from infra.sim.account import Account


def apply_fill(pos: Position, side: str, qty: int, value: Decimal, fee: Decimal,
               inst: Instrument) -> tuple[Decimal, int, Decimal, Decimal]:
    """Update size/entry; return (gross pnl, closed steps, open-fee share, entry avg of the closed part)."""
    if pos.size == 0 or pos.side == side:
        pos.side = side
        pos.size += qty
        pos.entry_value += value
        pos.open_fee += fee
        return Decimal(0), 0, Decimal(0), Decimal(0)
    closed = min(qty, pos.size)
    entry_avg = pos.entry_value / inst.qty_dec(pos.size)
    exit_avg = value / inst.qty_dec(qty)
    closed_d = inst.qty_dec(closed)
    gross = (exit_avg - entry_avg) * closed_d if pos.side == "Buy" else (entry_avg - exit_avg) * closed_d
    share = pos.open_fee * closed / pos.size
    pos.entry_value -= entry_avg * closed_d
    pos.open_fee -= share
    pos.size -= closed
    if pos.size == 0:
        pos.side = ""
        pos.entry_value = Decimal(0)
        pos.open_fee = Decimal(0)
        rest = qty - closed
        if rest:
            pos.side = side
            pos.size = rest
            pos.entry_value = exit_avg * inst.qty_dec(rest)
            pos.open_fee = fee * rest / qty
    return gross, closed, share, entry_avg


def realise(acct: Account, pos: Position, amount: Decimal, t: int) -> None:
    """Book a realised amount (a fill's PnL net of its fee, or a funding payment) on the balance and the position."""
    acct.balance += amount
    acct.cum_realised += amount
    pos.cur_realised += amount
    pos.cum_realised += amount
    pos.updated = t
    pos.seq = acct.next_seq()


def trade_execution(acct: Account, order: Order, inst: Instrument, qty: int, price: int, value: Decimal,
                    fee: Decimal, rate: Decimal, is_maker: bool, closed: int, pnl: Decimal, t: int) -> Execution:
    mark = acct.mark(order.symbol, t)
    data = {
        "symbol": order.symbol, "orderType": order.order_type, "underlyingPrice": "",
        "orderLinkId": order.link_id, "side": order.side,
        "indexPrice": inst.price_str(acct.price_of(order.symbol, "IndexPrice", t)),
        "orderId": order.order_id, "stopOrderType": order.stop_order_type or "UNKNOWN",
        "leavesQty": inst.qty_str(order.qty - order.cum_qty if order.status == "PartiallyFilled" else 0),
        "execTime": str(t), "feeCurrency": "USDT", "isMaker": is_maker, "execFee": money(fee),
        "feeRate": dec_str(rate), "execId": acct.ids.uuid("exec"), "tradeIv": "", "blockTradeId": "",
        "markPrice": inst.price_str(mark), "execPrice": inst.price_str(price), "markIv": "",
        "orderQty": inst.qty_str(order.qty),
        "orderPrice": inst.price_str(order.price) if order.price else inst.price_str(price),
        "execValue": money(value), "execType": "Trade", "execQty": inst.qty_str(qty),
        "closedSize": inst.qty_str(closed), "extraFees": "", "seq": acct.next_seq(),
        "createType": order.create_type,
    }
    return _record_execution(acct, data, money(pnl), t)


def funding_execution(acct: Account, pos: Position, fee: Decimal, rate: Decimal, value: Decimal, mark_ticks: int,
                      t: int) -> Execution:
    inst = acct.inst(pos.symbol)
    data = {
        "symbol": pos.symbol, "orderType": "UNKNOWN", "underlyingPrice": "", "orderLinkId": "",
        "side": pos.side, "indexPrice": inst.price_str(acct.price_of(pos.symbol, "IndexPrice", t)),
        "orderId": "", "stopOrderType": "UNKNOWN", "leavesQty": "0", "execTime": str(t),
        "feeCurrency": "USDT", "isMaker": False, "execFee": money(fee), "feeRate": dec_str(rate),
        "execId": acct.ids.uuid("exec"), "tradeIv": "", "blockTradeId": "",
        "markPrice": inst.price_str(mark_ticks), "execPrice": inst.price_str(mark_ticks), "markIv": "",
        "orderQty": "0", "orderPrice": "0", "execValue": money(value), "execType": "Funding",
        "execQty": inst.qty_str(pos.size), "closedSize": "0", "extraFees": "", "seq": acct.next_seq(),
        "createType": "",
    }
    return _record_execution(acct, data, "0", t)


def _record_execution(acct: Account, data: dict, exec_pnl: str, t: int) -> Execution:
    # The WS topic carries extraFees as a list (REST: a string).
    extra = {"category": "linear", "isLeverage": "", "marketUnit": "", "execPnl": exec_pnl, "extraFees": []}
    execution = Execution(data, extra, t)
    acct.executions.append(execution)
    return execution


def closed_pnl_row(order: Order, inst: Instrument, closed: int, entry_avg: Decimal, exit_price: Decimal, net: Decimal,
                   open_fee: Decimal, close_fee: Decimal, leverage: Decimal, t: int) -> dict:
    closed_d = inst.qty_dec(closed)
    return {
        "symbol": order.symbol, "orderType": order.order_type, "leverage": dec_str(leverage),
        "updatedTime": str(t), "side": order.side, "orderId": order.order_id, "closedPnl": money(net),
        "avgEntryPrice": money(entry_avg), "qty": inst.qty_str(order.qty),
        "cumEntryValue": money(entry_avg * closed_d), "createdTime": str(order.created),
        "orderPrice": inst.price_str(order.price) if order.price else inst.price_str(inst.to_ticks(exit_price)),
        "closedSize": inst.qty_str(closed), "avgExitPrice": money(exit_price), "execType": "Trade",
        "fillCount": "1", "cumExitValue": money(exit_price * closed_d), "openFee": money(open_fee),
        "closeFee": money(close_fee),
    }
