"""The account's margins and its wallet snapshot (`/v5/account/wallet-balance`, the `wallet` topic).

Margins are cross margin over all positions at the mark price; resting
orders that can open a position hold initial margin at their price.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from infra.sim.orders import MM_RATE, money
from infra.sim.wire import dec_str

if TYPE_CHECKING:
    from infra.sim.account import Account


def margins(acct: Account, t: int) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """(unrealised PnL, position IM, order IM, maintenance margin)."""
    upl = pim = mm = oim = Decimal(0)
    for pos in acct.positions.values():
        if pos.size:
            inst = acct.inst(pos.symbol)
            mark = inst.price_dec(acct.mark(pos.symbol, t))
            upl += pos.upl(inst, mark)
            value = inst.qty_dec(pos.size) * mark
            pim += value / pos.leverage
            mm += value * MM_RATE
    for order in acct.open_orders.values():
        if order.status in ("New", "PartiallyFilled") and not order.reduce_only and order.price is not None:
            inst = acct.inst(order.symbol)
            oim += inst.qty_dec(order.leaves) * inst.price_dec(order.price) / acct.leverage[order.symbol]
    return upl, pim, oim, mm


def available(acct: Account, t: int) -> Decimal:
    upl, pim, oim, _ = margins(acct, t)
    return acct.balance + upl - pim - oim


def wallet_item(acct: Account, t: int) -> dict:
    upl, pim, oim, mm = margins(acct, t)
    equity = acct.balance + upl
    im = pim + oim
    avail = max(Decimal(0), equity - im)
    rate = (lambda x: dec_str((x / equity).quantize(Decimal("0.0001"))) if equity > 0 else "0")
    coin = {
        "coin": "USDT", "equity": money(equity), "usdValue": money(equity), "walletBalance": money(acct.balance),
        "free": "", "locked": "0", "spotHedgingQty": "0", "borrowAmount": "0", "availableToWithdraw": "",
        "availableToBorrow": "", "accruedInterest": "0", "totalOrderIM": money(oim), "totalPositionIM": money(pim),
        "totalPositionMM": money(mm), "unrealisedPnl": money(upl), "cumRealisedPnl": money(acct.cum_realised),
        "bonus": "0", "marginCollateral": True, "collateralSwitch": True, "spotBorrow": "0",
    }
    return {
        "accountType": "UNIFIED", "accountIMRate": rate(im), "accountIMRateByMp": rate(im),
        "accountMMRate": rate(mm), "accountMMRateByMp": rate(mm), "totalEquity": money(equity),
        "totalWalletBalance": money(acct.balance), "totalMarginBalance": money(equity),
        "totalAvailableBalance": money(avail), "totalPerpUPL": money(upl), "totalInitialMargin": money(im),
        "totalInitialMarginByMp": money(im), "totalMaintenanceMargin": money(mm),
        "totalMaintenanceMarginByMp": money(mm), "accountLTV": "0", "coin": [coin],
    }
