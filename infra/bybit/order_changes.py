"""Changing orders already placed: cancel one, cancel all of a symbol, amend one."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any, Mapping

from infra.bybit.errors import MalformedResponse, NoAnswer, Rejected
from infra.bybit.instrument_lookup import InstrumentLookup
from infra.bybit.instruments import decimal_str
from infra.bybit.models import AmendAck, CancelAck
from infra.bybit.order_lookup import find_order, order_key
from infra.bybit.product import CATEGORY
from infra.bybit.rate_limit import Lane
from infra.bybit.transport import Answer, Endpoints
from infra.logging import get_logger
from messages.account import OrderStatus
from messages.types import Side

log = get_logger("gateway")

# Cancel of an order that is no longer open (filled, cancelled, or never there).
RET_ORDER_NOT_OPEN = frozenset({110001, 110008})


class OrderChanges(InstrumentLookup):
    """`Gateway`'s cancel, cancel-all and amend."""

    def cancel_order(self, symbol: str, *, order_id: str | None = None, order_link_id: str | None = None) -> CancelAck:
        """Cancel one order. Rejected 110001/110008: it is not open (filled, cancelled or unknown).

        Retries transient errors (a cancel is idempotent). When an earlier
        attempt got no answer and a later one says "not open", the order is
        looked up: if it is Cancelled, that earlier attempt did it.
        """
        sender = self._sender
        sender.check_writable()
        params = order_key(symbol, order_id, order_link_id)
        lane = sender.lane(Lane.CANCEL)
        unanswered = threading.Event()

        def attempt() -> Answer:
            try:
                return sender.once(Endpoints.CANCEL, lane, params)
            except NoAnswer:
                unanswered.set()
                raise

        try:
            answer = sender.retrying("cancel_order", lane, attempt)
        except Rejected as exc:
            if exc.ret_code in RET_ORDER_NOT_OPEN and unanswered.is_set():
                order = sender.retrying(
                    "cancel_lookup", lane, lambda: find_order(sender, symbol, lane, order_link_id=order_link_id, order_id=order_id)
                )
                if order is not None and order.order_status is OrderStatus.CANCELLED:
                    log.info("gateway.order_cancelled", symbol=symbol, order_id=order.order_id, order_link_id=order.order_link_id, lane=lane.name.lower(), by="earlier_attempt")
                    return CancelAck(symbol=symbol, order_id=order.order_id, order_link_id=order.order_link_id)
            log.warning("gateway.cancel_rejected", symbol=symbol, order_id=order_id, order_link_id=order_link_id, ret_code=exc.ret_code, ret_msg=exc.ret_msg)
            raise
        answered_id = answer.result.get("orderId") or order_id
        if not answered_id:
            raise MalformedResponse("cancel answer without orderId", endpoint=Endpoints.CANCEL.path)
        ack = CancelAck(symbol=symbol, order_id=str(answered_id), order_link_id=answer.result.get("orderLinkId") or order_link_id)
        log.info("gateway.order_cancelled", symbol=symbol, order_id=ack.order_id, order_link_id=ack.order_link_id, lane=lane.name.lower(), by="request")
        return ack

    def cancel_all(self, symbol: str, *, order_filter: str | None = None) -> list[CancelAck]:
        """Cancel every open order of `symbol`. `order_filter`: None (all kinds, TP/SL included),

        "Order" (resting orders only: keeps position TP/SL), "StopOrder".
        """
        sender = self._sender
        sender.check_writable()
        lane = sender.lane(Lane.CANCEL)
        params: dict[str, Any] = {"category": CATEGORY, "symbol": symbol}
        if order_filter is not None:
            if order_filter not in ("Order", "StopOrder", "OpenOrder"):
                raise ValueError(f"unknown orderFilter {order_filter!r}")
            params["orderFilter"] = order_filter
        answer = sender.retried(Endpoints.CANCEL_ALL, lane, params, call="cancel_all")
        acks = [
            CancelAck(symbol=symbol, order_id=str(i["orderId"]), order_link_id=i.get("orderLinkId") or None)
            for i in answer.result.get("list") or []
            if isinstance(i, Mapping) and i.get("orderId")
        ]
        log.info("gateway.cancel_all", symbol=symbol, order_filter=order_filter, cancelled=len(acks), lane=lane.name.lower())
        return acks

    def amend_order(
        self,
        symbol: str,
        *,
        order_id: str | None = None,
        order_link_id: str | None = None,
        side: Side | None = None,
        qty: Decimal | None = None,
        price: Decimal | None = None,
        take_profit: Decimal | None = None,
        stop_loss: Decimal | None = None,
        trigger_price: Decimal | None = None,
    ) -> AmendAck:
        """Amend an open order (sent once: on NoAnswer, check with get_order).

        A new limit `price` is rounded like a create's, never to a worse price
        (a buy down, a sell up), so the order's `side` is required with it;
        trigger, take-profit and stop-loss prices go to the nearest tick.
        """
        sender = self._sender
        sender.check_writable()
        key = order_key(symbol, order_id, order_link_id)
        if price is not None and side is None:
            raise ValueError("amending a limit price needs the order's side (to round it to a safe tick)")
        lane = sender.lane(Lane.ORDER)
        inst = self.instrument(symbol)
        changes: dict[str, str] = {}
        if qty is not None:
            changes["qty"] = decimal_str(inst.checked_qty(qty, market=False, reduce_only=False))
        if price is not None and side is not None:
            changes["price"] = decimal_str(inst.checked_price(inst.round_limit_price(price, side), "price"))
        for name, value in (("takeProfit", take_profit), ("stopLoss", stop_loss), ("triggerPrice", trigger_price)):
            if value is not None:
                changes[name] = decimal_str(inst.checked_tick_price(value, name))
        if not changes:
            raise ValueError("nothing to amend")
        answer = sender.once(Endpoints.AMEND, lane, {**key, **changes})
        ack = AmendAck(
            symbol=symbol,
            order_id=str(answer.result.get("orderId") or order_id or "") or None,
            order_link_id=answer.result.get("orderLinkId") or order_link_id,
        )
        log.info("gateway.order_amended", symbol=symbol, order_id=ack.order_id, order_link_id=ack.order_link_id, changes=sorted(changes))
        return ack
