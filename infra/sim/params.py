"""Request parameters, read the way Bybit reads them.

Every problem is a `SimError` with Bybit's retCode and message, raised at the
first bad parameter, so a handler that reads its parameters in Bybit's order
answers with the error Bybit would give first.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any, Container, Sequence, TypeVar

from infra.sim.instruments import Instrument
from infra.sim.wire import param_error

WEEK_MS = 7 * 86_400_000

Row = TypeVar("Row")


def decimal_param(p: dict, name: str, required: bool = False) -> Decimal | None:
    value = p.get(name)
    if value is None or value == "":
        if required:
            raise param_error(f"params error: {name} is required")
        return None
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise param_error(f"params error: {name} invalid") from None
    if not d.is_finite():
        raise param_error(f"params error: {name} invalid")
    return d


def bool_param(p: dict, name: str) -> bool:
    value = p.get(name, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if value in (0, 1):
        return bool(value)
    raise param_error(f"params error: {name} must be a boolean")


def int_param(p: dict, name: str, default: int | None = None, lo: int | None = None) -> int | None:
    value = p.get(name)
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise param_error(f"params error: {name} must be an integer") from None
    if lo is not None and n < lo:
        raise param_error(f"params error: {name} out of range")
    return n


def require_linear(p: dict) -> None:
    """The trading endpoints' `category`: required, and "linear"."""
    cat = p.get("category")
    if cat != "linear":
        raise param_error("params error: category invalid" if cat else "params error: category is required")


def market_category(p: dict, required: bool = True) -> None:
    """The market endpoints' `category`: "linear" when given (optional for klines)."""
    value = p.get("category")
    if value is None or value == "":
        if required:
            raise param_error("params error: category is required")
        return
    if value != "linear":
        raise param_error(f"params error: category {value} is not supported by this venue (linear only)")


def require_scope(p: dict) -> None:
    """Linear order queries and cancel-all need a symbol, a baseCoin or a settleCoin."""
    if not (p.get("symbol") or p.get("baseCoin") or p.get("settleCoin")):
        raise param_error("params error: symbol, baseCoin or settleCoin is required for linear")


def known_symbol(p: dict, symbols: Container[str]) -> None:
    """An optional `symbol` must be one the venue lists."""
    symbol = p.get("symbol")
    if symbol and symbol not in symbols:
        raise param_error("params error: symbol invalid")


def linear_symbol(p: dict, symbols: Container[str]) -> str:
    """`category=linear` and a listed `symbol`, both required."""
    require_linear(p)
    if not p.get("symbol"):
        raise param_error("params error: symbol is required")
    known_symbol(p, symbols)
    return str(p["symbol"])


def position_idx(p: dict, allowed: Sequence[int]) -> int:
    """`positionIdx` (default 0), which must fit the symbol's position mode."""
    raw = p.get("positionIdx", 0)
    try:
        idx = int(raw)
    except (TypeError, ValueError):
        raise param_error("params error: positionIdx invalid") from None
    if idx not in allowed:
        raise param_error("position idx not match position mode")
    return idx


def qty_steps(inst: Instrument, qty: Decimal) -> int:
    steps = qty / inst.qty_step
    if steps != steps.to_integral_value() or qty <= 0:
        raise param_error("Qty invalid: not a multiple of the qty step" if qty > 0 else "params error: qty invalid")
    if qty < inst.min_qty:
        raise param_error("The number of contracts exceeds minimum limit allowed")
    return int(steps)


def price_ticks(inst: Instrument, price: Decimal, name: str) -> int:
    ticks = price / inst.tick
    if price <= 0 or ticks != ticks.to_integral_value():
        raise param_error(f"params error: {name} invalid (tick size {inst.tick})")
    return int(ticks)


def optional_ticks(inst: Instrument, p: dict, name: str) -> int | None:
    """A price parameter where absent and "0" both mean "none"."""
    value = decimal_param(p, name)
    if value is None or value == 0:
        return None
    return price_ticks(inst, value, name)


def level_update(inst: Instrument, value: Decimal | None, name: str, current: int | None) -> int | None:
    """A TP/SL level being changed: absent keeps `current`, "0" removes it, anything else replaces it."""
    if value is None:
        return current
    return None if value == 0 else price_ticks(inst, value, name)


def page(rows: list[Row], p: dict, max_limit: int, default_limit: int) -> tuple[list[Row], str]:
    """The slice of `rows` that `limit` and `cursor` ask for, and the cursor of the next page ("" if none)."""
    limit = _page_limit(p, max_limit, default_limit)
    offset = _cursor(p)
    more = offset + limit < len(rows)
    return rows[offset:offset + limit], f"page_args%3D{offset + limit}" if more else ""


def _page_limit(p: dict, hi: int, default: int) -> int:
    value = p.get("limit")
    if value in (None, ""):
        return default
    try:
        n = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise param_error("params error: limit invalid") from None
    if not 1 <= n <= hi:
        raise param_error(f"params error: limit must be within [1, {hi}]")
    return n


def _cursor(p: dict) -> int:
    value = str(p.get("cursor") or "")
    if not value:
        return 0
    try:
        return int(value.replace("page_args%3D", "").replace("page_args=", ""))
    except ValueError:
        raise param_error("params error: cursor invalid") from None


def time_window(p: dict, t: int) -> tuple[int, int]:
    """Bybit's 7-day query window: none -> last 7 days; start only -> 7 days on; end only -> 7 days back."""
    start, end = p.get("startTime"), p.get("endTime")
    try:
        s = _ms(start)
        e = _ms(end)
    except (TypeError, ValueError):
        raise param_error("params error: startTime/endTime invalid") from None
    if s is None and e is None:
        return t - WEEK_MS, t
    if e is None:
        assert s is not None
        return s, s + WEEK_MS
    if s is None:
        return e - WEEK_MS, e
    if e < s or e - s > WEEK_MS:
        raise param_error("params error: the time range must be within 7 days")
    return s, e


def _ms(value: Any) -> int | None:
    return int(value) if value not in (None, "") else None
