"""Naming one order by its orderId or orderLinkId, and finding it: open, recently closed, or in the history."""

from __future__ import annotations

from typing import Any, Mapping

from infra.bybit.product import CATEGORY
from infra.bybit.rate_limit import Lane
from infra.bybit.sender import Sender, parsing
from infra.bybit.transport import Endpoints
from messages.account import Order


def order_key(symbol: str, order_id: str | None, order_link_id: str | None) -> dict[str, Any]:
    """The parameters naming one order; the orderId wins when both are given."""
    if not (order_id or order_link_id):
        raise ValueError("need order_id or order_link_id")
    key: dict[str, Any] = {"category": CATEGORY, "symbol": symbol}
    if order_id:
        key["orderId"] = order_id
    else:
        key["orderLinkId"] = order_link_id
    return key


def find_order(
    sender: Sender, symbol: str, lane: Lane, *, order_link_id: str | None = None, order_id: str | None = None
) -> Order | None:
    """One pass: open orders, recent closed orders, then order history. No retries."""
    key = order_key(symbol, order_id, order_link_id)
    for endpoint, extra in (
        (Endpoints.OPEN_ORDERS, {"openOnly": 0}),
        (Endpoints.OPEN_ORDERS, {"openOnly": 1}),
        (Endpoints.ORDER_HISTORY, {}),
    ):
        answer = sender.once(endpoint, lane, {**key, **extra})
        for item in answer.result.get("list") or []:
            if not isinstance(item, Mapping):
                continue
            if order_id and item.get("orderId") != order_id:
                continue
            if not order_id and item.get("orderLinkId") != order_link_id:
                continue
            with parsing(endpoint):
                return Order.from_bybit(item)
    return None


class OrderLookup:
    """`Gateway`'s `get_order`."""

    _sender: Sender

    def get_order(self, symbol: str, *, order_link_id: str | None = None, order_id: str | None = None) -> Order | None:
        """The order as the venue knows it (open, recently closed or in history), or None."""
        lane = self._sender.lane(Lane.QUERY)
        return self._sender.retrying(
            "get_order", lane, lambda: find_order(self._sender, symbol, lane, order_link_id=order_link_id, order_id=order_id)
        )
