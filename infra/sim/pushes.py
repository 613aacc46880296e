"""What the account pushes on the private topics after a change.

A change pushes `execution` (if something traded), then `order`, then
`position`, then `wallet`, as Bybit does; the callers keep that order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from infra.sim.orders import Execution, Order
from infra.sim.wallet import wallet_item

if TYPE_CHECKING:
    from infra.sim.account import Account


def push_orders(acct: Account, orders: Iterable[Order], t: int) -> None:
    items = [o.wire(acct.inst(o.symbol), ws=True) for o in orders]
    if items:
        acct.push("order", items, t)


def push_positions(acct: Account, keys: Iterable[tuple[str, int]], t: int) -> None:
    items = []
    for key in dict.fromkeys(keys):
        pos = acct.position(*key, t)
        items.append(pos.wire(acct.inst(pos.symbol), acct.mark(pos.symbol, t), ws=True))
    if items:
        acct.push("position", items, t)


def push_wallet(acct: Account, t: int) -> None:
    acct.push("wallet", [wallet_item(acct, t)], t)


def push_execution(acct: Account, execution: Execution, t: int) -> None:
    acct.push("execution", [execution.wire(ws=True)], t)
