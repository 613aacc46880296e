"""Closed bars -> one Arrow table, the unit DuckDB upserts in a single statement.

A batch holds each (symbol, interval, open_time) once (the last copy wins),
because one upsert statement must not touch the same row twice. A bar
whose decimals do not fit the column type is set aside, never rounded: a
silently altered price is worse than a reported missing one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from operator import attrgetter
from typing import Iterable

import pyarrow as pa

from infra.store.schema import DECIMAL_PRECISION, DECIMAL_SCALE
from messages.market import ClosedBar
from messages.types import utc_to_ms

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
    # (symbol, interval) -> (first, last) open time in ms, for the series metadata
    spans: dict[tuple[str, str], tuple[int, int]]

    @property
    def rows(self) -> int:
        return self.table.num_rows


# One pass over each bar yields every column (transposed below): far cheaper
# than one attribute walk per column on the flush path.
_ROW = attrgetter("symbol", "interval", "open_time", *_PRICE_FIELDS, "source")


def build_batch(bars: Iterable[ClosedBar]) -> Batch:
    unique: dict[tuple[str, str, datetime], ClosedBar] = {}
    for bar in bars:
        unique[(bar.symbol, bar.interval, bar.open_time)] = bar
    try:
        return Batch(table=_table(unique), rejected=(), spans=_spans(unique))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    # Rare: some value does not fit. Find the bars that carry one (slow path, exact).
    rejected = tuple(b for b in unique.values() if not all(fits(getattr(b, f)) for f in _PRICE_FIELDS))
    for bar in rejected:
        del unique[(bar.symbol, bar.interval, bar.open_time)]
    return Batch(table=_table(unique), rejected=rejected, spans=_spans(unique))


def _spans(unique: dict[tuple[str, str, datetime], ClosedBar]) -> dict[tuple[str, str], tuple[int, int]]:
    spans: dict[tuple[str, str], tuple[datetime, datetime]] = {}
    for symbol, interval, open_time in unique:
        lo_hi = spans.get((symbol, interval))
        if lo_hi is None:
            spans[(symbol, interval)] = (open_time, open_time)
        elif open_time < lo_hi[0]:
            spans[(symbol, interval)] = (open_time, lo_hi[1])
        elif open_time > lo_hi[1]:
            spans[(symbol, interval)] = (lo_hi[0], open_time)
    return {key: (utc_to_ms(lo), utc_to_ms(hi)) for key, (lo, hi) in spans.items()}


def _table(unique: dict[tuple[str, str, datetime], ClosedBar]) -> pa.Table:
    if not unique:
        return SCHEMA.empty_table()
    symbol, interval, open_time, *prices, source = zip(*map(_ROW, unique.values()))
    columns = [
        pa.array(symbol, pa.string()),
        pa.array(interval, pa.string()),
        # Aware UTC datetimes; pyarrow stores them as UTC in the naive column.
        pa.array(open_time, pa.timestamp("ms")),
        *(pa.array(column, _DEC) for column in prices),
        pa.array(source, pa.string()),
    ]
    return pa.Table.from_arrays(columns, schema=SCHEMA)
