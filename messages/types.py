"""Field types shared by every message: UTC times, venue decimals, intervals.

Bybit sends numbers as strings and uses "" (sometimes "0") for "no value".
These annotated types parse exactly that, reject NaN/inf and non-numeric
strings, and turn every timestamp into an aware UTC datetime.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

UTC = timezone.utc


class Message(BaseModel):
    """Base of every actor message: immutable (Pykka never copies), no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


# --- time ---------------------------------------------------------------

def ms_to_utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def utc_to_ms(t: datetime) -> int:
    if t.tzinfo is None:
        raise ValueError("naive datetime: every timestamp in the node is timezone-aware UTC")
    return int(round(t.timestamp() * 1000))


def now_utc() -> datetime:
    return datetime.now(UTC)


def _to_utc(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime; timestamps must be timezone-aware")
        return value.astimezone(UTC)
    if isinstance(value, bool):
        raise ValueError("expected a millisecond timestamp, got a boolean")
    if isinstance(value, str):
        if not value.strip().isdigit():
            raise ValueError(f"expected a millisecond timestamp, got {value!r}")
        value = int(value)
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"timestamp must be positive, got {value}")
        try:
            return ms_to_utc(value)
        except (OverflowError, OSError, ValueError):  # past year 9999: the platform cannot represent it
            raise ValueError(f"timestamp out of range: {value}") from None
    raise ValueError(f"expected a millisecond timestamp, got {type(value).__name__}")


def _blank_to_none(value: Any) -> Any:
    return None if value == "" else value


def _absent_to_none(value: Any) -> Any:
    """Bybit writes "", "0" or "0.00" for a price that is not set."""
    if value == "" or value is None:
        return None
    try:
        return None if Decimal(str(value)) == 0 else value
    except ArithmeticError:
        return value  # let the decimal validator report it


UtcDatetime = Annotated[datetime, BeforeValidator(_to_utc)]
OptUtcDatetime = Annotated[datetime | None, BeforeValidator(lambda v: None if v in ("", "0", 0, None) else _to_utc(v))]

# --- decimals -----------------------------------------------------------

Price = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
Qty = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
PositiveQty = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
Amount = Annotated[Decimal, Field(allow_inf_nan=False)]  # signed: PnL, fees, funding
OptPrice = Annotated[Price | None, BeforeValidator(_absent_to_none)]
OptQty = Annotated[Qty | None, BeforeValidator(_blank_to_none)]
OptAmount = Annotated[Amount | None, BeforeValidator(_blank_to_none)]

# --- names --------------------------------------------------------------

_SYMBOL_RE = re.compile(r"^[A-Z0-9][A-Z0-9\-]{1,40}$")


def _check_symbol(value: str) -> str:
    if not _SYMBOL_RE.match(value):
        raise ValueError(f"not a Bybit symbol: {value!r}")
    return value


Symbol = Annotated[str, AfterValidator(_check_symbol)]
OptStr = Annotated[str | None, BeforeValidator(_blank_to_none)]


class Side(StrEnum):
    BUY = "Buy"
    SELL = "Sell"

    @property
    def opposite(self) -> "Side":
        return Side.SELL if self is Side.BUY else Side.BUY


OptSide = Annotated[Side | None, BeforeValidator(_blank_to_none)]

# --- intervals ----------------------------------------------------------

Interval = Literal["1", "3", "5", "15", "30", "60", "120", "240", "360", "720", "D", "W", "M"]
INTERVALS: tuple[str, ...] = Interval.__args__  # type: ignore[attr-defined]
_MINUTE = 60_000


def interval_minutes(interval: str) -> int | None:
    """Fixed length in minutes, or None for the calendar month."""
    if interval == "D":
        return 1440
    if interval == "W":
        return 7 * 1440
    if interval == "M":
        return None
    if interval in INTERVALS:
        return int(interval)
    raise ValueError(f"unknown interval {interval!r}; Bybit serves {', '.join(INTERVALS)}")


def interval_ms(interval: str) -> int | None:
    minutes = interval_minutes(interval)
    return None if minutes is None else minutes * _MINUTE


_WEEK_ANCHOR_MS = 4 * 1440 * _MINUTE  # 1970-01-05, a Monday: Bybit's weeks start Monday 00:00 UTC


def align_ms(interval: str, t_ms: int) -> int:
    """Open time (ms) of the bar of `interval` that contains `t_ms`."""
    if interval == "M":
        t = ms_to_utc(t_ms)
        return utc_to_ms(datetime(t.year, t.month, 1, tzinfo=UTC))
    step = interval_ms(interval)
    assert step is not None
    anchor = _WEEK_ANCHOR_MS if interval == "W" else 0
    return (t_ms - anchor) // step * step + anchor


def next_open_ms(interval: str, open_ms: int) -> int:
    """Open time of the bar after the one opening at `open_ms`."""
    if interval == "M":
        t = ms_to_utc(open_ms)
        year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
        return utc_to_ms(datetime(year, month, 1, tzinfo=UTC))
    step = interval_ms(interval)
    assert step is not None
    return open_ms + step


def is_aligned(interval: str, t_ms: int) -> bool:
    return align_ms(interval, t_ms) == t_ms


def bar_duration(interval: str, open_ms: int) -> timedelta:
    return timedelta(milliseconds=next_open_ms(interval, open_ms) - open_ms)
