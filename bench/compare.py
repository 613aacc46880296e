"""Same-run comparison against a raw reference: the one rule every figure follows.

This machine is shared: an absolute figure moves 2-3x between runs, while a
ratio of two things timed *alternately* in one loop (raw, ours, raw, ours,
...) holds within a few percent, because both see the same neighbours.

    cmp = alternate(raw=lambda: raw_round(), ours=lambda: our_round(), rounds=7)
    figures = cmp.figures("db_upsert", unit_per_s=bars)   # absolute + reference + ratio

Each callable runs one round and returns the seconds it measured (so setup
outside the timed part stays outside). `ratio` is ours/raw for throughput
(higher is better) and raw/ours for latency figures named so.

    cmp.latency("db_writer_live_p99_ms", "db_writer_live_raw_p99_ms", unit_s=1e-3)

A round may return any per-round seconds figure (a p99, say), not only a
duration: the median of those is what `latency` reports.

Every figure made by `throughput`/`latency` (and any ratio a benchmark
computes itself and names with `record`) is remembered, so `make bench`
can print the table figure / reference / ratio / target without each
benchmark repeating it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Row:
    """One line of the `make bench` table: keys into the results object."""

    figure: str
    reference: str | None
    ratio: str | None


_ROWS: list[Row] = []


def record(figure: str, reference: str | None = None, ratio: str | None = None) -> None:
    """Name a figure (and its reference and ratio keys) for the table; a figure named again is replaced."""
    row = Row(figure, reference, ratio)
    for i, known in enumerate(_ROWS):
        if known.figure == figure:
            _ROWS[i] = row
            return
    _ROWS.append(row)


def recorded() -> list[Row]:
    return list(_ROWS)


@dataclass(frozen=True)
class Comparison:
    raw_s: tuple[float, ...]
    ours_s: tuple[float, ...]

    @property
    def raw_median_s(self) -> float:
        return statistics.median(self.raw_s)

    @property
    def ours_median_s(self) -> float:
        return statistics.median(self.ours_s)

    @property
    def speed_ratio(self) -> float:
        """Our throughput as a fraction of the reference's (same work per round)."""
        return self.raw_median_s / self.ours_median_s

    def throughput(self, figure: str, reference: str, work_per_round: float) -> dict[str, float]:
        """`figure` (ours, per second), `reference` (raw, per second) and `<figure>_ratio`."""
        record(figure, reference, f"{figure}_ratio")
        return {
            figure: round(work_per_round / self.ours_median_s, 1),
            reference: round(work_per_round / self.raw_median_s, 1),
            f"{figure}_ratio": round(self.speed_ratio, 3),
        }

    def latency(self, figure: str, reference: str, units_per_round: float = 1, unit_s: float = 1e-3,
                digits: int = 3) -> dict[str, float]:
        """`figure` and `reference` as the median time per unit (in `unit_s`), and `<figure>_ratio` = raw/ours.

        The ratio reads like a throughput ratio: below 1, ours takes longer than the reference.
        """
        record(figure, reference, f"{figure}_ratio")
        return {
            figure: round(self.ours_median_s / units_per_round / unit_s, digits),
            reference: round(self.raw_median_s / units_per_round / unit_s, digits),
            f"{figure}_ratio": round(self.speed_ratio, 3),
        }


def alternate(raw: Callable[[], float], ours: Callable[[], float], rounds: int = 7, warmup: int = 1) -> Comparison:
    """Time `raw` and `ours` alternately; the first `warmup` pairs are discarded."""
    raw_s: list[float] = []
    ours_s: list[float] = []
    for i in range(warmup + rounds):
        # Alternate which goes first, so neither always follows the other's cache effects.
        pair = (raw, ours) if i % 2 == 0 else (ours, raw)
        got = {fn: fn() for fn in pair}
        if i >= warmup:
            raw_s.append(got[raw])
            ours_s.append(got[ours])
    return Comparison(tuple(raw_s), tuple(ours_s))
