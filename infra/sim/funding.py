"""Funding: at 00/08/16 UTC every open position pays (or receives) its value at the mark price x the rate."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from infra.logging import get_logger
from infra.sim.ledger import funding_execution, realise
from infra.sim.orders import money
from infra.sim.pushes import push_execution, push_positions, push_wallet
from infra.sim.wire import dec_str

if TYPE_CHECKING:
    from infra.sim.account import Account

log = get_logger("sim")


def settle_funding(acct: Account, t: int) -> None:
    for (symbol, idx), pos in list(acct.positions.items()):
        if not pos.size:
            continue
        inst = acct.inst(symbol)
        rate = Decimal(acct.models[symbol].funding_rate_e6(t)).scaleb(-6)
        mark_ticks = acct.mark(symbol, t)
        value = inst.qty_dec(pos.size) * inst.price_dec(mark_ticks)
        fee = value * rate * (1 if pos.side == "Buy" else -1)  # positive: paid by this account
        realise(acct, pos, -fee, t)
        push_execution(acct, funding_execution(acct, pos, fee, rate, value, mark_ticks, t), t)
        push_positions(acct, [(symbol, idx)], t)
        push_wallet(acct, t)
        log.info("sim.funding", symbol=symbol, rate=dec_str(rate), fee=money(fee))
