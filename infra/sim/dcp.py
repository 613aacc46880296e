"""Disconnect-cancel-all (REFERENCE.md 3.14).

Armed by a private connection subscribing to `dcp.future`; once every such
connection has been gone for longer than the window, every open order is
cancelled (CancelByDCP). Positions and their TP/SL orders stay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from infra.logging import get_logger
from infra.sim.cancel_amend import cancel
from infra.sim.pushes import push_orders, push_wallet
from infra.sim.wire import PERMISSION_DENIED, Raw, SimError, param_error

if TYPE_CHECKING:
    from infra.sim.account import Account

log = get_logger("sim")


def set_dcp(acct: Account, p: dict, t: int) -> dict:
    if not acct.dcp_available:
        raise SimError(PERMISSION_DENIED, "Disconnected-CancelAll-Prevention is not enabled for this account")
    product = p.get("product") or "OPTIONS"
    if product not in ("OPTIONS", "DERIVATIVES", "SPOT"):
        raise param_error("params error: product invalid")
    try:
        window = int(p.get("timeWindow"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise param_error("params error: timeWindow is required") from None
    if not 3 <= window <= 300:
        raise param_error("params error: timeWindow must be within [3, 300]")
    if product == "DERIVATIVES":
        acct.dcp_window_s = window
    log.info("sim.dcp.window", product=product, seconds=window)
    return Raw(retCode=0, retMsg="success")


def dcp_info(acct: Account, p: dict, t: int) -> dict:
    if not acct.dcp_available:
        return {"dcpInfos": []}
    return {"dcpInfos": [{"product": "DERIVATIVES", "dcpStatus": "ON", "timeWindow": str(acct.dcp_window_s)}]}


def on_dcp_subscribed(acct: Account, conn: Any) -> None:
    acct.dcp_conns[conn] = None
    acct.dcp_armed = True
    acct.dcp_gone_since = None


def on_private_gone(acct: Account, conn: Any, t: int) -> None:
    """A connection closed or dropped its dcp topic; the last one to go starts the countdown."""
    if conn in acct.dcp_conns:
        del acct.dcp_conns[conn]
        if not acct.dcp_conns and acct.dcp_armed:
            acct.dcp_gone_since = t


def dcp_due(acct: Account) -> int | None:
    """When DCP fires (ms) unless a dcp subscriber comes back first; None when it is not counting down."""
    if not acct.dcp_available or not acct.dcp_armed or acct.dcp_gone_since is None:
        return None
    return acct.dcp_gone_since + acct.dcp_window_s * 1000 + 1


def check_dcp(acct: Account, t: int) -> None:
    due = dcp_due(acct)
    if due is None or t < due:
        return
    acct.dcp_armed = False
    acct.dcp_gone_since = None
    picked = [o for o in acct.orders.values() if o.is_open and not o.is_tpsl]
    for order in picked:
        cancel(acct, order, t, "CancelByDCP")
    log.warning("sim.dcp.fired", cancelled=len(picked), window_s=acct.dcp_window_s)
    if picked:
        push_orders(acct, picked, t)
        push_wallet(acct, t)
