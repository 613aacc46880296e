"""Instrument rules (tick, step, minimums) and the Decimal rounding that obeys them.

Rounding always goes the safe way:

* quantity: down to the step (never more exposure than asked);
* limit price: a buy rounds down, a sell rounds up (never a worse price
  than asked);
* take-profit / stop-loss / trigger prices: to the nearest tick.

An order whose rounded quantity is below the minimum, above the maximum,
or (unless reduce-only) below the minimum notional is refused with
`OrderRefused` before anything is sent.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Any, Mapping

from pydantic import Field

from infra.bybit.errors import OrderRefused
from messages._parse import build
from messages.types import Message, Side, Symbol

class Instrument(Message):
    """One linear contract's trading rules, from /v5/market/instruments-info."""

    symbol: Symbol
    status: str
    tick_size: Decimal = Field(gt=0, allow_inf_nan=False)
    min_price: Decimal = Field(gt=0, allow_inf_nan=False)
    max_price: Decimal = Field(gt=0, allow_inf_nan=False)
    qty_step: Decimal = Field(gt=0, allow_inf_nan=False)
    min_qty: Decimal = Field(gt=0, allow_inf_nan=False)
    max_qty: Decimal = Field(gt=0, allow_inf_nan=False)
    max_market_qty: Decimal = Field(gt=0, allow_inf_nan=False)
    min_notional: Decimal = Field(ge=0, allow_inf_nan=False)
    min_leverage: Decimal = Field(gt=0, allow_inf_nan=False)
    max_leverage: Decimal = Field(gt=0, allow_inf_nan=False)
    leverage_step: Decimal = Field(gt=0, allow_inf_nan=False)

    @property
    def is_trading(self) -> bool:
        return self.status == "Trading"

    @classmethod
    def from_bybit(cls, item: Mapping[str, Any]) -> "Instrument":
        price = item.get("priceFilter") or {}
        lot = item.get("lotSizeFilter") or {}
        lev = item.get("leverageFilter") or {}
        max_qty = lot.get("maxOrderQty")
        return build(
            cls,
            "instrument",
            {},
            symbol=item.get("symbol"),
            status=item.get("status"),
            tick_size=price.get("tickSize"),
            min_price=price.get("minPrice"),
            max_price=price.get("maxPrice"),
            qty_step=lot.get("qtyStep"),
            min_qty=lot.get("minOrderQty"),
            max_qty=max_qty,
            # Older payloads lack maxMktOrderQty; the order maximum then applies.
            max_market_qty=lot.get("maxMktOrderQty") or max_qty,
            min_notional=lot.get("minNotionalValue") or "0",
            min_leverage=lev.get("minLeverage"),
            max_leverage=lev.get("maxLeverage"),
            leverage_step=lev.get("leverageStep"),
        )

    # --- rounding ------------------------------------------------------------

    def round_qty(self, qty: Decimal) -> Decimal:
        return _to_step(qty, self.qty_step, ROUND_FLOOR)

    def round_limit_price(self, price: Decimal, side: Side) -> Decimal:
        mode = ROUND_FLOOR if side is Side.BUY else ROUND_CEILING
        return _to_step(price, self.tick_size, mode)

    def round_trigger_price(self, price: Decimal) -> Decimal:
        return _to_step(price, self.tick_size, ROUND_HALF_UP)

    def round_leverage(self, leverage: Decimal) -> Decimal:
        return _to_step(leverage, self.leverage_step, ROUND_FLOOR)

    # --- checks --------------------------------------------------------------

    def checked_qty(self, qty: Decimal, *, market: bool, reduce_only: bool) -> Decimal:
        """The quantity rounded down to the step, or OrderRefused."""
        if not qty.is_finite() or qty <= 0:
            raise OrderRefused("qty_invalid", f"{self.symbol}: quantity must be positive, got {qty}")
        rounded = self.round_qty(qty)
        # A reduce-only order below the minimum is left for the venue to judge (it cannot add
        # exposure): refusing it here would make a position left smaller than minOrderQty (a
        # partial close, ADL) impossible even to try to close. Below one step there is no order.
        floor = self.qty_step if reduce_only else self.min_qty
        if rounded < floor:
            raise OrderRefused(
                "qty_below_minimum",
                f"{self.symbol}: {qty} rounds to {rounded}, below the minimum {floor} (step {self.qty_step})",
            )
        ceiling = self.max_market_qty if market else self.max_qty
        # Bybit splits an oversized reduce-only order itself.
        if rounded > ceiling and not reduce_only:
            raise OrderRefused("qty_above_maximum", f"{self.symbol}: {rounded} above the maximum {ceiling}")
        return rounded

    def checked_price(self, price: Decimal, what: str) -> Decimal:
        if not price.is_finite():
            raise OrderRefused("price_invalid", f"{self.symbol}: {what} must be a number, got {price}")
        if price < self.min_price or price > self.max_price:
            raise OrderRefused(
                "price_out_of_range",
                f"{self.symbol}: {what} {price} outside [{self.min_price}, {self.max_price}]",
            )
        return price

    def checked_tick_distance(self, distance: Decimal, what: str) -> Decimal:
        """A price distance (trailing stop) in whole ticks, at least one tick; or OrderRefused."""
        rounded = self.round_trigger_price(distance)
        if not rounded >= self.tick_size:
            raise OrderRefused("price_out_of_range", f"{self.symbol}: {what} {distance} is less than one tick ({self.tick_size})")
        return rounded

    def checked_tick_price(self, price: Decimal, what: str) -> Decimal:
        """`price` to the nearest tick, or OrderRefused (TP/SL, triggers, amends)."""
        return self.checked_price(self.round_trigger_price(price), what)

    def check_notional(self, qty: Decimal, price: Decimal) -> None:
        notional = qty * price
        if notional < self.min_notional:
            raise OrderRefused(
                "notional_below_minimum",
                f"{self.symbol}: {qty} x {price} = {notional}, below the minimum notional {self.min_notional}",
            )


def _to_step(value: Decimal, step: Decimal, rounding: str) -> Decimal:
    units = (value / step).to_integral_value(rounding=rounding)
    # quantize keeps the step's exponent, so "0.001" steps print as 0.123, not 0.123000.
    return (units * step).quantize(step)


def decimal_str(value: Decimal) -> str:
    """A Decimal as Bybit wants it: plain notation, no exponent, no trailing zeros."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"
