"""Closed bars -> one Arrow table, the unit DuckDB upserts in a single statement.

A batch holds each (symbol, interval, open_time) once (the last copy wins),
because one upsert statement must not touch the same row twice. A bar
whose decimals do not fit the column type is set aside, never rounded: a
silently altered price is worse than a reported missing one.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Iterable

import pyarrow as pa

from infra.store.schema import DECIMAL_PRECISION, DECIMAL_SCALE
from messages.market import ClosedBar

_DEC = pa.decimal128(DECIMAL_PRECISION, DECIMAL_SCALE)
_MAX_INT_DIGITS = DECIMAL_PRECISION - DECIMAL_SCALE
_QUANTUM = Decimal(1).scaleb(-DECIMAL_SCALE)
_PRICE_FIELDS = ("open", "high", "low", "close", "volume", "turnover")

SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("interval", pa.string()),
        ("open_time", pa.timestamp("ms")),
        *((name, _DEC) for name in _PRICE_FIELDS),
        ("source", pa.string()),
    ]
)


def fits(value: Decimal) -> bool:
    """True if DECIMAL(38,18) holds `value` exactly."""
    if not value.is_finite() or value.adjusted() >= _MAX_INT_DIGITS:
        return False
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    return exponent >= -DECIMAL_SCALE or value.quantize(_QUANTUM) == value


@dataclass(frozen=True)
class Batch:
    table: pa.Table
    rejected: tuple[ClosedBar, ...]

    @property
    def rows(self) -> int:
        return self.table.num_rows


def build_batch(bars: Iterable[ClosedBar]) -> Batch:
    unique: dict[tuple[str, str, int], ClosedBar] = {}
    rejected: list[ClosedBar] = []
    for bar in bars:
        if all(fits(getattr(bar, f)) for f in _PRICE_FIELDS):
            unique[(bar.symbol, bar.interval, bar.open_ms)] = bar
        else:
            rejected.append(bar)
    rows = list(unique.values())
    columns = [
        pa.array([b.symbol for b in rows], pa.string()),
        pa.array([b.interval for b in rows], pa.string()),
        pa.array([k[2] for k in unique], pa.timestamp("ms")),
        *(pa.array([getattr(b, f) for b in rows], _DEC) for f in _PRICE_FIELDS),
        pa.array([b.source.value for b in rows], pa.string()),
    ]
    return Batch(table=pa.Table.from_arrays(columns, schema=SCHEMA), rejected=tuple(rejected))
