"""POST /v5/position/trading-stop, /v5/position/set-leverage and /v5/position/switch-mode."""

from __future__ import annotations

from typing import TYPE_CHECKING

from infra.sim.params import decimal_param, known_symbol, level_update, linear_symbol, position_idx, require_linear
from infra.sim.pushes import push_orders, push_positions, push_wallet
from infra.sim.tpsl import check_tpsl, set_position_tpsl
from infra.sim.wire import (
    LEVERAGE_NOT_MODIFIED,
    NOT_MODIFIED,
    OPEN_ORDERS_EXIST,
    POSITION_EXISTS,
    POSITION_MODE_NOT_MODIFIED,
    SimError,
    param_error,
)

if TYPE_CHECKING:
    from infra.sim.account import Account


def trading_stop(acct: Account, p: dict, t: int) -> dict:
    symbol = linear_symbol(p, acct.models)
    mode = p.get("tpslMode")
    if mode not in ("Full", "Partial"):
        raise param_error("params error: tpslMode is required (Full or Partial)")
    if mode == "Partial":
        raise param_error("tpslMode Partial is not supported by the simulator")
    if "positionIdx" not in p:
        raise param_error("params error: positionIdx is required")
    idx = position_idx(p, acct.position_keys(symbol))
    pos = acct.position(symbol, idx, t)
    if pos.size == 0:
        raise param_error("can not set tp/sl/ts for zero position")
    inst = acct.inst(symbol)
    tp_raw, sl_raw = decimal_param(p, "takeProfit"), decimal_param(p, "stopLoss")
    tp = level_update(inst, tp_raw, "takeProfit", pos.take_profit)
    sl = level_update(inst, sl_raw, "stopLoss", pos.stop_loss)
    if (tp, sl) == (pos.take_profit, pos.stop_loss):
        raise SimError(NOT_MODIFIED, "not modified")
    last = acct.last(symbol, t)
    check_tpsl(pos.side, last, tp if tp != pos.take_profit else None, sl if sl != pos.stop_loss else None)
    touched = set_position_tpsl(acct, pos, tp, sl, str(p.get("tpTriggerBy") or "LastPrice"),
                                str(p.get("slTriggerBy") or "LastPrice"), t, cancel_missing=True)
    pos.updated = t
    push_orders(acct, touched, t)
    push_positions(acct, [(symbol, idx)], t)
    return {}


def set_leverage(acct: Account, p: dict, t: int) -> dict:
    symbol = linear_symbol(p, acct.models)
    buy, sell = decimal_param(p, "buyLeverage", required=True), decimal_param(p, "sellLeverage", required=True)
    assert buy is not None and sell is not None
    if not acct.hedge[symbol] and buy != sell:
        raise param_error("buy leverage must equal sell leverage in one-way mode")
    inst = acct.inst(symbol)
    if not 1 <= buy <= inst.max_leverage:
        raise param_error(f"leverage invalid: must be within [1, {inst.max_leverage}]")
    if buy == acct.leverage[symbol]:
        raise SimError(LEVERAGE_NOT_MODIFIED, "leverage not modified")
    acct.leverage[symbol] = buy
    for idx in acct.position_keys(symbol):
        pos = acct.position(symbol, idx, t)
        pos.leverage = buy
        pos.updated = t
    push_positions(acct, [(symbol, i) for i in acct.position_keys(symbol)], t)
    push_wallet(acct, t)
    return {}


def switch_mode(acct: Account, p: dict, t: int) -> dict:
    require_linear(p)
    symbol, coin = p.get("symbol"), p.get("coin")
    if not symbol and not coin:
        raise param_error("params error: symbol or coin is required")
    known_symbol(p, acct.models)
    try:
        mode = int(p.get("mode"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise param_error("params error: mode is required (0 or 3)") from None
    if mode not in (0, 3):
        raise param_error("params error: mode must be 0 (one-way) or 3 (hedge)")
    symbols = [str(symbol)] if symbol else [s for s in acct.models if coin == "USDT"]
    want = mode == 3
    if all(acct.hedge[s] == want for s in symbols):
        raise SimError(POSITION_MODE_NOT_MODIFIED, "Position mode is not modified")
    for s in symbols:
        if any(pos.size for (sym, _), pos in acct.positions.items() if sym == s):
            raise SimError(POSITION_EXISTS, "position exists, cannot switch position mode")
        if any(o.is_open for o in acct.orders.values() if o.symbol == s):
            raise SimError(OPEN_ORDERS_EXIST, "open orders exist, cannot switch position mode")
    for s in symbols:
        acct.hedge[s] = want
        for key in [k for k in acct.positions if k[0] == s]:
            del acct.positions[key]
    return {}
