"""The account's REST lists: orders, executions, closed PnL, positions, wallet, fee rates, API key."""

from __future__ import annotations

from typing import TYPE_CHECKING

from infra.sim.orders import MAKER_FEE, TAKER_FEE, Order, Position
from infra.sim.params import known_symbol, page, require_linear, require_scope, time_window
from infra.sim.wallet import wallet_item
from infra.sim.wire import dec_str, param_error

if TYPE_CHECKING:
    from infra.sim.account import Account

RECENT_CLOSED = 500  # /v5/order/realtime keeps this many closed orders


def realtime(acct: Account, p: dict, t: int) -> dict:
    require_linear(p)
    require_scope(p)
    open_only = str(p.get("openOnly") or "0")
    if open_only == "1":
        recent = set(acct.closed_ids[-RECENT_CLOSED:])
        orders = [o for o in _order_filter(acct, p) if o.order_id in recent]
    else:
        orders = [o for o in _order_filter(acct, p) if o.is_open]
    orders.sort(key=lambda o: (o.created, o.seq), reverse=True)
    return _order_rows(acct, orders, p, 50, 20)


def history(acct: Account, p: dict, t: int) -> dict:
    require_linear(p)
    start, end = time_window(p, t)
    status = p.get("orderStatus")
    orders = [o for o in _order_filter(acct, p) if start <= o.created <= end and (not status or o.status == status)]
    orders.sort(key=lambda o: (o.created, o.seq), reverse=True)
    return _order_rows(acct, orders, p, 50, 20)


def _order_filter(acct: Account, p: dict) -> list[Order]:
    symbol, base, settle = p.get("symbol"), p.get("baseCoin"), p.get("settleCoin")
    oid, link = p.get("orderId"), p.get("orderLinkId")
    flt = p.get("orderFilter")
    out = []
    for order in acct.orders.values():
        if symbol and order.symbol != symbol or base and acct.inst(order.symbol).base_coin != base:
            continue
        if settle and settle != "USDT" or oid and order.order_id != oid or link and order.link_id != link:
            continue
        conditional = bool(order.stop_order_type) and order.status in ("Untriggered", "Deactivated")
        if flt == "Order" and conditional or flt in ("StopOrder", "tpslOrder") and not order.stop_order_type:
            continue
        out.append(order)
    return out


def _order_rows(acct: Account, orders: list[Order], p: dict, max_limit: int, default: int) -> dict:
    page_rows, cursor = page(orders, p, max_limit, default)
    rows = []
    for order in page_rows:
        zero = order.zero_avg_reads > 0
        if zero:
            order.zero_avg_reads -= 1
        rows.append(order.wire(acct.inst(order.symbol), ws=False, zero_avg=zero))
    return {"list": rows, "nextPageCursor": cursor, "category": "linear"}


def execution_list(acct: Account, p: dict, t: int) -> dict:
    require_linear(p)
    start, end = time_window(p, t)
    rows = [e for e in acct.executions if start <= e.exec_time <= end]
    for name in ("symbol", "orderId", "orderLinkId", "execType"):
        value = p.get(name)
        if value:
            rows = [e for e in rows if e.data.get(name) == value]
    rows.sort(key=lambda e: (e.exec_time, e.data["seq"]), reverse=True)
    page_rows, cursor = page(rows, p, 100, 50)
    return {"nextPageCursor": cursor, "category": "linear", "list": [e.wire(ws=False) for e in page_rows]}


def closed_pnl_list(acct: Account, p: dict, t: int) -> dict:
    require_linear(p)
    start, end = time_window(p, t)
    rows = [r for r in acct.closed_pnl if start <= int(r["updatedTime"]) <= end]
    if p.get("symbol"):
        rows = [r for r in rows if r["symbol"] == p["symbol"]]
    rows.reverse()
    page_rows, cursor = page(rows, p, 100, 50)
    return {"nextPageCursor": cursor, "category": "linear", "list": page_rows}


def position_list(acct: Account, p: dict, t: int) -> dict:
    require_linear(p)
    symbol, settle = p.get("symbol"), p.get("settleCoin")
    if not symbol and not settle:
        raise param_error("Missing some parameters that must be filled in, symbol or settleCoin")
    known_symbol(p, acct.models)
    rows = []
    if acct.faults.state.empty_positions.take():
        return {"list": [], "nextPageCursor": "", "category": "linear"}
    symbols = [str(symbol)] if symbol else list(acct.models)
    for s in symbols:
        for idx in acct.position_keys(s):
            pos = acct.positions.get((s, idx))
            if pos is None:
                pos = Position(s, idx, acct.leverage[s], created=t)
            if symbol or pos.size:
                rows.append(pos.wire(acct.inst(s), acct.mark(s, t), ws=False))
    return {"list": rows, "nextPageCursor": "", "category": "linear"}


def wallet_balance(acct: Account, p: dict, t: int) -> dict:
    if p.get("accountType") != "UNIFIED":
        raise param_error("accountType only support UNIFIED")
    coins = p.get("coin")
    item = wallet_item(acct, t)
    if coins and "USDT" not in str(coins).split(","):
        item["coin"] = []
    return {"list": [item]}


def fee_rate(acct: Account, p: dict, t: int) -> dict:
    require_linear(p)
    symbol = p.get("symbol")
    known_symbol(p, acct.models)
    symbols = [symbol] if symbol else list(acct.models)
    return {"list": [{"symbol": s, "takerFeeRate": dec_str(TAKER_FEE), "makerFeeRate": dec_str(MAKER_FEE),
                      "baseCoin": ""} for s in symbols]}


def api_key_info(acct: Account, api_key: str) -> dict:
    """The key's permissions. No withdrawal permission unless a test grants one."""
    wallet = ["AccountTransfer", "SubMemberTransfer"] + (["Withdraw"] if acct.withdraw_permission else [])
    return {
        "id": "1", "note": "simulator", "apiKey": api_key, "readOnly": 0, "secret": "",
        "permissions": {"ContractTrade": ["Order", "Position"], "Spot": [], "Wallet": wallet, "Options": [],
                        "Derivatives": [], "CopyTrading": [], "BlockTrade": [], "Exchange": [], "NFT": [],
                        "Affiliate": [], "Earn": []},
        "ips": ["*"], "type": 1, "deadlineDay": 90, "expiredAt": "", "createdAt": "", "unified": 0, "uta": 1,
        "userID": 1, "inviterID": 0, "vipLevel": "No VIP", "mktMakerLevel": "0", "affiliateID": 0,
        "rsaPublicKey": "", "isMaster": True, "parentUid": "0", "kycLevel": "LEVEL_DEFAULT", "kycRegion": "",
    }
