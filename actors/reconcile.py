"""Reconciliation (DATA-019): the venue's orders and positions against the node's live state.

Disagreements are events, never silent. The one action it takes is to
cancel an orphaned conditional order (a reduce-only / close-on-trigger
conditional on a symbol whose position is flat), and only when BOTH the
venue's position read for that symbol came back successfully AND the
private stream's state agrees it is flat. An empty, failed or partial
answer never triggers a cancellation: a dropped position list is exactly
what made the reviewed design cancel every stop on the account.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from infra.logging import get_logger
from messages.account import Order, Position
from messages.queries import StateSnapshot
from messages.types import now_utc

log = get_logger("reconcile")

SETTLE_S = 5.0


@dataclass
class ReconcileResult:
    ok: bool = True
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # orphan candidates left alone, with why in the events
    error: str | None = None


def _is_protective_conditional(order: Order) -> bool:
    return order.is_conditional and (order.reduce_only or order.close_on_trigger or
                                     order.stop_order_type in ("TakeProfit", "StopLoss"))


def _stream_position(snapshot: StateSnapshot, symbol: str) -> Position | None:
    return snapshot.positions.get((symbol, 0))


class Reconciler:
    """One pass per call. `gateway` is the node's gateway (query/cancel lanes)."""

    def __init__(self, gateway: Any):
        self._gw = gateway

    def run(self, snapshot: StateSnapshot | None) -> ReconcileResult:
        """Compare and, where it is safe, cancel orphans. Never raises."""
        result = ReconcileResult()
        try:
            venue_orders = self._gw.get_open_orders()
        except Exception as exc:  # noqa: BLE001 - a failed read decides nothing
            result.ok, result.error = False, f"{type(exc).__name__}: {exc}"
            log.warning("reconcile.failed", step="open orders", error=result.error)
            return result
        try:
            listed = {p.symbol: p for p in self._gw.get_open_positions()}
            list_error = None
        except Exception as exc:  # noqa: BLE001
            listed, list_error = None, f"{type(exc).__name__}: {exc}"
            log.warning("reconcile.failed", step="position list", error=list_error)
        if snapshot is None:
            log.warning("reconcile.failed", step="state snapshot", error="no snapshot from the StateStore")
        else:
            self._compare(snapshot, venue_orders, listed, result)
        for symbol in sorted({o.symbol for o in venue_orders if _is_protective_conditional(o)}):
            self._orphans(symbol, [o for o in venue_orders if o.symbol == symbol and _is_protective_conditional(o)],
                          snapshot, result)
        log.info("reconcile.done", venue_orders=len(venue_orders),
                 venue_positions=None if listed is None else len(listed), mismatches=len(result.mismatches),
                 cancelled=result.cancelled, kept=result.kept)
        return result

    def _compare(self, snapshot: StateSnapshot, venue_orders: list[Order], listed: dict[str, Position] | None,
                 result: ReconcileResult) -> None:
        # Orders younger than the settle window may be in flight between the two views: not a disagreement.
        settled = now_utc() - timedelta(seconds=SETTLE_S)
        venue_ids = {o.order_id for o in venue_orders}
        for oid in sorted(set(snapshot.open_orders) - venue_ids):
            o = snapshot.open_orders[oid]
            if (o.updated_time or o.created_time) < settled:
                self._mismatch(result, "order_only_in_stream", symbol=o.symbol, order_id=oid)
        for o in venue_orders:
            if o.order_id not in snapshot.open_orders and o.created_time < settled:
                self._mismatch(result, "order_only_on_venue", symbol=o.symbol, order_id=o.order_id)
        if listed is None:
            return
        stream_open = {k[0]: p for k, p in snapshot.positions.items() if p.is_open}
        for symbol in sorted(set(stream_open) | set(listed)):
            venue_size = listed[symbol].signed_size if symbol in listed else 0
            stream_size = stream_open[symbol].signed_size if symbol in stream_open else 0
            if venue_size != stream_size:
                self._mismatch(result, "position_size", symbol=symbol, venue=str(venue_size), stream=str(stream_size))

    def _orphans(self, symbol: str, orders: list[Order], snapshot: StateSnapshot | None,
                 result: ReconcileResult) -> None:
        ids = [o.order_id for o in orders]
        try:
            # Strict: Bybit always returns the symbol's row, so an empty answer raises instead of reading as flat.
            venue = self._gw.get_position(symbol)
        except Exception as exc:  # noqa: BLE001
            result.kept += ids
            log.warning("reconcile.orphan_kept", symbol=symbol, order_ids=ids,
                        why=f"position read failed: {type(exc).__name__}: {exc}")
            return
        if venue.is_open:
            return  # protecting an open position: not an orphan
        stream = _stream_position(snapshot, symbol) if snapshot is not None else None
        if stream is None or stream.is_open:
            result.kept += ids
            log.warning("reconcile.orphan_kept", symbol=symbol, order_ids=ids,
                        why="the private stream does not agree the position is flat" if stream is not None
                        else "the private stream has no position for the symbol")
            return
        for order in orders:
            try:
                self._gw.cancel_order(symbol, order_id=order.order_id)
            except Exception as exc:  # noqa: BLE001 - it may have ended by itself meanwhile
                log.warning("reconcile.cancel_failed", symbol=symbol, order_id=order.order_id,
                            error=f"{type(exc).__name__}: {exc}")
                continue
            result.cancelled.append(order.order_id)
            log.warning("reconcile.orphan_cancelled", symbol=symbol, order_id=order.order_id,
                        stop_order_type=order.stop_order_type, trigger_price=str(order.trigger_price))

    @staticmethod
    def _mismatch(result: ReconcileResult, kind: str, **fields: Any) -> None:
        result.mismatches.append({"kind": kind, **fields})
        log.warning("reconcile.mismatch", kind=kind, **fields)
