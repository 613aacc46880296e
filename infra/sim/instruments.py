"""Instrument specs of the simulated USDT perpetuals (tick size, qty step, limits).

Like the venue, the simulator lists a fixed set of instruments (`LISTED`),
whatever a client is configured for: a symbol outside it is refused
(`UnlistedSymbol`), never invented.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from decimal import Decimal

from infra.sim.ids import stream_key, uniform

# Bybit listed its first USDT perpetuals in 2020; every simulated symbol has
# bars from the first day of that month on, so `M` bars are whole months.
LAUNCH_MS = 1_583_020_800_000  # 2020-03-01T00:00:00Z


@dataclass(frozen=True)
class Instrument:
    symbol: str
    base_coin: str
    p0: Decimal  # typical price level
    tick_exp: int  # tick = 10**-tick_exp
    price_scale: int  # decimals shown for prices (>= tick_exp)
    qty_exp: int  # qty step = 10**-qty_exp
    min_qty: Decimal
    max_qty: Decimal
    max_mkt_qty: Decimal
    min_notional: Decimal
    max_leverage: Decimal
    volume_per_min: Decimal  # mean traded base qty per minute
    open_interest: Decimal
    launch_ms: int = LAUNCH_MS
    symbol_id: int = 0

    @property
    def tick(self) -> Decimal:
        return Decimal(1).scaleb(-self.tick_exp)

    @property
    def qty_step(self) -> Decimal:
        return Decimal(1).scaleb(-self.qty_exp)

    def price_str(self, ticks: int) -> str:
        return fixed(ticks * 10 ** (self.price_scale - self.tick_exp), self.price_scale)

    def qty_str(self, steps: int) -> str:
        return fixed(steps, self.qty_exp)

    def to_ticks(self, price: Decimal) -> int:
        return int((price / self.tick).to_integral_value())

    def to_steps(self, qty: Decimal) -> int:
        return int((qty / self.qty_step).to_integral_value())

    def price_dec(self, ticks: int) -> Decimal:
        return Decimal(ticks).scaleb(-self.tick_exp)

    def qty_dec(self, steps: int) -> Decimal:
        return Decimal(steps).scaleb(-self.qty_exp)


def fixed(value: int, decimals: int) -> str:
    """Integer `value` scaled by 10**-decimals, as a fixed-point string."""
    if decimals == 0:
        return str(value)
    sign = "-" if value < 0 else ""
    q, r = divmod(abs(value), 10**decimals)
    return f"{sign}{q}.{r:0{decimals}d}"


_KNOWN = {
    "BTCUSDT": dict(p0="65000", tick_exp=1, price_scale=2, qty_exp=3, min_qty="0.001", max_qty="1190",
                    max_mkt_qty="500", max_leverage="100", volume_per_min="40", open_interest="52000", symbol_id=5),
    "ETHUSDT": dict(p0="3200", tick_exp=2, price_scale=2, qty_exp=2, min_qty="0.01", max_qty="7240",
                    max_mkt_qty="3000", max_leverage="100", volume_per_min="600", open_interest="1400000", symbol_id=6),
}


# Every instrument the simulator lists, in listing order. BTC and ETH have the
# venue's real specs; the others derive theirs from the seed.
LISTED: tuple[str, ...] = (
    "BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT", "DOGEUSDT",
    "ADAUSDT", "LINKUSDT", "AVAXUSDT", "LTCUSDT", "DOTUSDT", "SUIUSDT",
)


class UnlistedSymbol(ValueError):
    """A symbol the simulator does not list."""

    def __init__(self, symbol: str):
        self.symbol = symbol
        self.close = close_matches(symbol, LISTED)
        near = f"; did you mean {', '.join(self.close)}?" if self.close else ""
        super().__init__(f"{symbol} is not listed by the simulator{near} (it lists {', '.join(LISTED)})")


def close_matches(symbol: str, listed: "tuple[str, ...] | list[str]", n: int = 5) -> list[str]:
    """Listed symbols spelled like `symbol` (difflib), best first."""
    return difflib.get_close_matches(symbol.upper(), list(listed), n=n, cutoff=0.6)


def instrument_for(symbol: str, seed: int) -> Instrument:
    """The spec of a listed `symbol`: fixed for BTC/ETH, derived from the seed otherwise."""
    if symbol not in LISTED:
        raise UnlistedSymbol(symbol)
    base = symbol[: -len("USDT")]
    spec = _KNOWN.get(symbol)
    if spec is None:
        key = stream_key(seed, symbol, "instrument")
        # Log-uniform price between 0.05 and 500, rounded to 4 significant digits.
        p = Decimal(str(round(0.05 * (10_000 ** uniform(key, 0)), 10)))
        exp = p.adjusted()
        p0 = p.quantize(Decimal(1).scaleb(exp - 3))
        tick_exp = max(0, 4 - exp)  # five significant digits
        qty_exp = 0 if p0 < 10 else 1
        spec = dict(p0=str(p0), tick_exp=tick_exp, price_scale=tick_exp, qty_exp=qty_exp,
                    min_qty=str(Decimal(1).scaleb(-qty_exp)), max_qty="1000000", max_mkt_qty="200000",
                    max_leverage="50", volume_per_min=str((Decimal(20000) / p0).quantize(Decimal(1)) or 1),
                    open_interest=str((Decimal(5_000_000) / p0).quantize(Decimal(1))),
                    symbol_id=100 + int(uniform(key, 1) * 10_000))
    return Instrument(
        symbol=symbol,
        base_coin=base,
        p0=Decimal(spec["p0"]),
        tick_exp=spec["tick_exp"],
        price_scale=spec["price_scale"],
        qty_exp=spec["qty_exp"],
        min_qty=Decimal(spec["min_qty"]),
        max_qty=Decimal(spec["max_qty"]),
        max_mkt_qty=Decimal(spec["max_mkt_qty"]),
        min_notional=Decimal("5"),
        max_leverage=Decimal(spec["max_leverage"]),
        volume_per_min=Decimal(spec["volume_per_min"]),
        open_interest=Decimal(spec["open_interest"]),
        symbol_id=spec["symbol_id"],
    )
