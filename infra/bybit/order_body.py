"""The body of an order create, rounded to the instrument and checked before anything is sent."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Mapping

from infra.bybit.errors import OrderRefused
from infra.bybit.instruments import Instrument, decimal_str
from infra.bybit.models import OrderRequest, OrderType
from infra.bybit.product import CATEGORY
from messages.types import Side


def create_body(req: OrderRequest, inst: Instrument) -> tuple[dict[str, Any], Decimal, Decimal | None]:
    """The create body with the rounded qty and price; OrderRefused if it breaks a rule."""
    if not inst.is_trading:
        raise OrderRefused("instrument_not_trading", f"{req.symbol} status is {inst.status}")
    market = req.order_type is OrderType.MARKET
    qty = inst.checked_qty(req.qty, market=market, reduce_only=req.reduce_only)
    price = None
    if req.price is not None:
        price = inst.checked_price(inst.round_limit_price(req.price, req.side), "price")
    if not req.reduce_only:
        reference = price if price is not None else req.reference_price
        assert reference is not None  # OrderRequest guarantees it for opening orders
        inst.check_notional(qty, reference)
    body: dict[str, Any] = {
        "category": CATEGORY,
        "symbol": req.symbol,
        "side": req.side.value,
        "orderType": req.order_type.value,
        "qty": decimal_str(qty),
        "positionIdx": 0,
        "orderLinkId": req.order_link_id,
        "reduceOnly": req.reduce_only,
    }
    if price is not None:
        body["price"] = decimal_str(price)
    if req.time_in_force:
        body["timeInForce"] = req.time_in_force
    if req.close_on_trigger:
        body["closeOnTrigger"] = True
    if req.take_profit is not None:
        body["takeProfit"] = decimal_str(inst.checked_tick_price(req.take_profit, "take_profit"))
    if req.stop_loss is not None:
        body["stopLoss"] = decimal_str(inst.checked_tick_price(req.stop_loss, "stop_loss"))
    if req.tp_trigger_by:
        body["tpTriggerBy"] = req.tp_trigger_by
    if req.sl_trigger_by:
        body["slTriggerBy"] = req.sl_trigger_by
    _check_protective_sides(req, body)
    return body, qty, price


def _check_protective_sides(req: OrderRequest, body: Mapping[str, Any]) -> None:
    """After rounding, a long's stop must still be below its take-profit (and the reverse)."""
    tp, sl = body.get("takeProfit"), body.get("stopLoss")
    if tp is None or sl is None:
        return
    tp_d, sl_d = Decimal(tp), Decimal(sl)
    if (req.side is Side.BUY and not sl_d < tp_d) or (req.side is Side.SELL and not tp_d < sl_d):
        raise OrderRefused("tpsl_inverted", f"{req.symbol}: take-profit {tp} and stop-loss {sl} on the wrong sides")
