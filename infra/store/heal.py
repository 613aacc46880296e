"""Heal: check every stored series, refetch its gaps, report before and after (DATA-005).

Duplicates: the primary key makes a second row for a bar impossible (see
tests/unit/test_store_upsert.py, which tries), so heal only counts them and
reports the count, which is 0. There is nothing to delete, and no code path
that could delete the one row that must stay. Gaps: every fillable gap
between a series' first and last stored bar is refetched through
`HistorySync` (which also remembers new venue holes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from infra.logging import get_logger
from infra.store.ranges import BarRange
from infra.store.store import HistoryStore
from infra.store.sync import HistorySync, SyncFailed
from messages.types import ms_to_utc, next_open_ms, utc_to_ms


@dataclass(frozen=True)
class SeriesHealth:
    bars: int
    duplicates: int
    gaps: int  # fillable gap ranges
    missing_bars: int  # bars in those ranges
    venue_holes: int
    venue_hole_bars: int


@dataclass
class HealReport:
    symbol: str
    interval: str
    before: SeriesHealth
    after: SeriesHealth | None = None
    error: str | None = None
    refetched_bars: int = 0
    new_holes: list[BarRange] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and self.after is not None and self.after.gaps == 0 and self.after.duplicates == 0


def _health(store: HistoryStore, symbol: str, interval: str) -> tuple[SeriesHealth, BarRange | None]:
    with store.session() as s:
        info = s.series_info(symbol, interval)
        span = None
        if info is not None and info.first_open is not None and info.last_open is not None:
            span = BarRange(utc_to_ms(info.first_open), next_open_ms(interval, utc_to_ms(info.last_open)))
        gaps = s.fillable_gaps(symbol, interval, span) if span else []
        holes = s.venue_holes(symbol, interval)
        return (
            SeriesHealth(
                bars=s.count(symbol, interval),
                duplicates=s.duplicate_keys(),
                gaps=len(gaps),
                missing_bars=sum(g.bars(interval) for g in gaps),
                venue_holes=len(holes),
                venue_hole_bars=sum(h.bars(interval) for h in holes),
            ),
            span,
        )


def heal(
    store: HistoryStore,
    sync: HistorySync,
    *,
    only: Callable[[str, str], bool] = lambda symbol, interval: True,
) -> list[HealReport]:
    """Heal every series in the store (or those `only` selects); one report per series."""
    log = get_logger("infra.store.heal")
    with store.session() as s:
        series = [(i.symbol, i.interval) for i in s.series() if only(i.symbol, i.interval)]
    reports = []
    for symbol, interval in series:
        before, span = _health(store, symbol, interval)
        report = HealReport(symbol, interval, before)
        if span is not None and before.gaps:
            try:
                result = sync.sync(symbol, interval, ms_to_utc(span.start_ms), ms_to_utc(span.end_ms))
                report.refetched_bars, report.new_holes = result.bars_stored, result.venue_holes
            except SyncFailed as exc:
                report.refetched_bars, report.new_holes = exc.report.bars_stored, exc.report.venue_holes
                report.error = exc.report.error
        report.after, _ = _health(store, symbol, interval)
        if report.ok:
            with store.session() as s:
                s.mark_healed(symbol, interval)
        fields = dict(
            symbol=symbol,
            interval=interval,
            bars_before=before.bars,
            bars_after=report.after.bars,
            gaps_before=before.gaps,
            gaps_after=report.after.gaps,
            missing_before=before.missing_bars,
            missing_after=report.after.missing_bars,
            duplicates=report.after.duplicates,
            venue_holes=report.after.venue_holes,
        )
        if report.ok:
            log.info("heal.series", **fields)
        else:
            log.error("heal.incomplete", error=report.error, **fields)
        reports.append(report)
    return reports
