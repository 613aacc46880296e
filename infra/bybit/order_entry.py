"""Placing an order, with its three-way outcome.

`create_order` returns an `OrderAck` (accepted, acknowledged or found by
orderLinkId), raises `Rejected` (the venue said no: no order exists),
`OrderRefused` (never sent), `TransientError`/`RateLimited`/`IpBanned`
(not accepted: nothing was created), or `OutcomeUnknown` (sent, no answer
or one that does not parse, and the order could not be found within
`order_lookup_window_s`). The create is
sent once, never retried here; re-sending the same request is always safe:
the orderLinkId makes a second order impossible (110072 resolves to the first).
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from decimal import Decimal

from infra.bybit.errors import ExchangeError, MalformedResponse, NoAnswer, OrderRefused, OutcomeUnknown, Rejected
from infra.bybit.instrument_lookup import InstrumentLookup
from infra.bybit.instruments import decimal_str
from infra.bybit.models import OrderAck, OrderRequest, OrderType, Resolution
from infra.bybit.order_body import create_body
from infra.bybit.order_lookup import find_order
from infra.bybit.rate_limit import Lane
from infra.bybit.transport import Endpoints
from infra.logging import get_logger

log = get_logger("gateway")

RET_DUPLICATE_LINK_ID = 110072


class OrderEntry(InstrumentLookup):
    """`Gateway`'s `create_order`."""

    def create_order(self, req: OrderRequest) -> OrderAck:
        """Place one order; see the module docstring for the three outcomes."""
        lane = self._sender.lane(Lane.ORDER)
        self._sender.check_writable()
        inst = self.instrument(req.symbol)
        entries = self._sender.entries
        try:
            body, qty, price = create_body(req, inst)
            if not req.reduce_only:
                entries.admit(req.symbol, req.order_link_id)  # refused while a panic runs
        except OrderRefused as exc:
            log.warning(
                "gateway.order_refused", symbol=req.symbol, order_link_id=req.order_link_id, reason=exc.reason, detail=exc.detail
            )
            raise
        try:
            return self._send(req, body, qty, price, lane)
        finally:
            if not req.reduce_only:
                entries.done(req.order_link_id)

    def halt_entries(self, reason: str) -> AbstractContextManager[None]:
        """While inside: every opening create is refused (`entries_halted`); reduce-only ones go on."""
        return self._sender.entries.halted(reason)

    def settle_entries(self, timeout_s: float) -> tuple[set[str], bool]:
        """Wait for the opening creates in flight: (their symbols, whether all ended within `timeout_s`)."""
        return self._sender.entries.settle(timeout_s)

    def _send(self, req: OrderRequest, body: dict, qty: Decimal, price: Decimal | None, lane: Lane) -> OrderAck:
        fields = {"symbol": req.symbol, "order_link_id": req.order_link_id, "lane": lane.name.lower()}
        try:
            answer = self._sender.once(Endpoints.CREATE, lane, body)
        except Rejected as exc:
            if exc.ret_code == RET_DUPLICATE_LINK_ID:
                log.info("gateway.order_duplicate", **fields)
                return self._resolve(req, Resolution.DUPLICATE, qty, price, lane, cause=exc)
            log.warning("gateway.order_rejected", **fields, ret_code=exc.ret_code, ret_msg=exc.ret_msg)
            raise
        except (NoAnswer, MalformedResponse) as exc:
            # An answer that does not parse may still be the venue's acceptance: ambiguous, not "not sent".
            log.warning("gateway.order_outcome_unknown", **fields, cause=str(exc))
            return self._resolve(req, Resolution.LOOKED_UP, qty, price, lane, cause=exc)
        except ExchangeError as exc:
            # Not accepted (rate limit, ban, connection refused, clock): nothing was created.
            log.warning("gateway.order_not_sent", **fields, error=f"{type(exc).__name__}: {exc}")
            raise
        order_id = answer.result.get("orderId")
        if not order_id:
            # retCode 0 without an id: it was accepted, but we need the id.
            return self._resolve(req, Resolution.LOOKED_UP, qty, price, lane, cause=None)
        log.info(
            "gateway.order_accepted",
            **fields,
            order_id=order_id,
            side=req.side.value,
            order_type=req.order_type.value,
            qty=decimal_str(qty),
            price=decimal_str(price) if price is not None else None,
            reduce_only=req.reduce_only,
        )
        return OrderAck(
            symbol=req.symbol,
            order_id=str(order_id),
            order_link_id=req.order_link_id,
            resolution=Resolution.ACKNOWLEDGED,
            qty=qty,
            price=price,
            reduce_only=req.reduce_only,
        )

    def _resolve(
        self,
        req: OrderRequest,
        resolution: Resolution,
        qty: Decimal,
        price: Decimal | None,
        lane: Lane,
        cause: Exception | None,
    ) -> OrderAck:
        """Find the order by its orderLinkId, polling: Bybit processes creates asynchronously."""
        window_s = self._sender.exchange.order_lookup_window_s
        deadline = time.monotonic() + float(window_s)
        delay = 0.1
        last_error: Exception | None = cause
        attempts = 0
        while True:
            attempts += 1
            try:
                order = find_order(self._sender, req.symbol, lane, order_link_id=req.order_link_id)
            except ExchangeError as exc:
                order, last_error = None, exc
            if order is not None:
                log.info(
                    "gateway.order_resolved",
                    symbol=req.symbol,
                    order_link_id=req.order_link_id,
                    order_id=order.order_id,
                    order_status=order.order_status.value,
                    resolution=resolution.value,
                    lookups=attempts,
                )
                # The venue's order is the truth: after a duplicate orderLinkId it may
                # not be what this request asked for.
                return OrderAck(
                    symbol=req.symbol,
                    order_id=order.order_id,
                    order_link_id=req.order_link_id,
                    resolution=resolution,
                    order=order,
                    qty=order.qty,
                    price=order.price if req.order_type is OrderType.LIMIT else None,
                    reduce_only=order.reduce_only,
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.error(
                    "gateway.order_unresolved",
                    symbol=req.symbol,
                    order_link_id=req.order_link_id,
                    lookups=attempts,
                    last_error=str(last_error) if last_error else None,
                )
                raise OutcomeUnknown(
                    f"order {req.order_link_id} not found within {window_s} s; "
                    "re-send the same request (same orderLinkId) or look it up later",
                    order_link_id=req.order_link_id,
                    endpoint=Endpoints.CREATE.path,
                )
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 1.0)
