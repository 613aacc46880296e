"""The moving price acts on waiting orders: conditional orders trigger, resting limit orders fill.

Between two instants the price follows the model's piecewise-linear path,
so every level it crosses is crossed at a known time; orders act in that
time order (ties by sequence). A gap made by `set_price` crosses everything
between the old and the new price at once, and a triggered market order
fills at the gapped price, as a real gap would.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from infra.sim.matching import activate, fill, taker_price
from infra.sim.orders import Order
from infra.sim.pushes import push_orders

if TYPE_CHECKING:
    from infra.sim.account import Account


def on_path(acct: Account, t0: int, t1: int) -> None:
    """The price walks from t0 to t1; act on every level it crosses, in time order."""
    for symbol, model in acct.models.items():
        if not _watched(acct, symbol):
            continue
        cuts = [t0, *model.path_knots(t0, t1), t1]
        for a, b in zip(cuts, cuts[1:]):
            _sweep(acct, symbol, a, b, gap_price=None)


def on_jump(acct: Account, symbol: str, t: int, before: int, after: int) -> None:
    """`set_price` gapped the market from `before` to `after` at t."""
    _sweep(acct, symbol, t, t, gap_price=(before, after))


def _watched(acct: Account, symbol: str) -> list[Order]:
    return [o for o in acct.open_orders.values() if o.symbol == symbol and o.is_open
            and (o.status == "Untriggered" or o.price is not None)]


def _level(order: Order) -> tuple[int, int] | None:
    """(level, direction) at which the order acts: 1 = when the price rises to it, 2 = falls to it."""
    if order.status == "Untriggered":
        return (order.trigger_price, order.trigger_direction) if order.trigger_price else None
    if order.price is None:
        return None
    return (order.price, 2) if order.side == "Buy" else (order.price, 1)


def _sweep(acct: Account, symbol: str, a: int, b: int, gap_price: tuple[int, int] | None) -> None:
    handled: set[str] = set()
    while True:
        best = None
        for order in _watched(acct, symbol):
            if order.order_id in handled:
                continue
            hit = _crossing(acct, order, symbol, a, b, gap_price)
            if hit is not None and (best is None or (hit[0], order.seq) < (best[0], best[1].seq)):
                best = (hit[0], order, hit[1])
        if best is None:
            return
        t_hit, order, level = best
        handled.add(order.order_id)
        _act(acct, order, t_hit, level, gap_price[1] if gap_price else None)


def _crossing(acct: Account, order: Order, symbol: str, a: int, b: int,
              gap: tuple[int, int] | None) -> tuple[int, int] | None:
    """(time, level) at which the price crosses the order's level in [a, b], or None."""
    spec = _level(order)
    if spec is None:
        return None
    level, direction = spec
    by = order.trigger_by if order.status == "Untriggered" else "LastPrice"
    if gap is not None:
        pa, pb = gap
        if by != "LastPrice":
            pb = acct.price_of(symbol, by, b)
    else:
        pa, pb = acct.price_of(symbol, by, a), acct.price_of(symbol, by, b)
    if direction == 1 and pb >= level > pa or direction == 2 and pb <= level < pa:
        if gap is not None or pb == pa:
            return b, level
        frac = (level - pa) / (pb - pa)
        return min(b, a + math.ceil(frac * (b - a))), level
    return None


def _act(acct: Account, order: Order, t: int, level: int, gap_to: int | None) -> None:
    if order.status == "Untriggered":
        _trigger(acct, order, t, level, gap_to)
    else:
        # A resting limit order: filled at its price as maker.
        assert order.price is not None
        fill(acct, order, order.price, is_maker=True, t=t)


def _trigger(acct: Account, order: Order, t: int, level: int, gap_to: int | None) -> None:
    pos = acct.position_for(order, t)
    order.status = "Triggered"
    order.updated = t
    if order.is_tpsl:
        if pos.size == 0:
            acct.close_order(order, "Deactivated", t, "CancelByTpSlTsClear")
            push_orders(acct, [order], t)
            return
        order.qty = pos.size
        pos.set_level(order.stop_order_type, None)
    push_orders(acct, [order], t)
    order.status = "New"
    if order.order_type == "Market":
        market = gap_to if gap_to is not None else level
        fill(acct, order, taker_price(order.side, market), is_maker=False, t=t)
    else:
        activate(acct, order, t)
