"""Ranges of bar open times and the calendar arithmetic behind them.

A `BarRange` is half-open, [start_ms, end_ms): it holds every bar of an
interval whose open time o is aligned and start_ms <= o < end_ms. Half-open
ranges never overlap at a shared edge and subtract cleanly. Month bars vary
in length (28..31 days); every step here goes through `messages.types`
(`align_ms`, `next_open_ms`) or month arithmetic, never a fixed length.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Iterator

from messages.types import UTC, align_ms, interval_ms, ms_to_utc, next_open_ms, utc_to_ms


@dataclass(frozen=True, order=True)
class BarRange:
    start_ms: int
    end_ms: int

    def __post_init__(self) -> None:
        if self.end_ms <= self.start_ms:
            raise ValueError(f"empty or reversed range [{self.start_ms}, {self.end_ms})")

    @property
    def start(self) -> datetime:
        return ms_to_utc(self.start_ms)

    @property
    def end(self) -> datetime:
        return ms_to_utc(self.end_ms)

    def bars(self, interval: str) -> int:
        return count_bars(interval, self.start_ms, self.end_ms)

    def last_open_ms(self, interval: str) -> int:
        return prev_open_ms(interval, self.end_ms)

    def describe(self) -> str:
        return f"[{_iso(self.start_ms)}, {_iso(self.end_ms)})"


def _iso(ms: int) -> str:
    return ms_to_utc(ms).strftime("%Y-%m-%dT%H:%M:%SZ")


def _month_index(ms: int) -> int:
    t = ms_to_utc(ms)
    return t.year * 12 + (t.month - 1)


def _month_start(index: int) -> int:
    return utc_to_ms(datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC))


def prev_open_ms(interval: str, open_ms: int) -> int:
    """Open time of the bar before the one opening at (or containing) `open_ms`."""
    aligned = align_ms(interval, open_ms)
    if aligned != open_ms:
        return aligned
    if interval == "M":
        return _month_start(_month_index(open_ms) - 1)
    step = interval_ms(interval)
    assert step is not None
    return open_ms - step


def ceil_open_ms(interval: str, t_ms: int) -> int:
    """The first bar open at or after `t_ms`."""
    aligned = align_ms(interval, t_ms)
    return aligned if aligned == t_ms else next_open_ms(interval, aligned)


def count_bars(interval: str, start_ms: int, end_ms: int) -> int:
    """How many bar opens lie in [start_ms, end_ms) (both ends aligned)."""
    if end_ms <= start_ms:
        return 0
    if interval == "M":
        return _month_index(end_ms) - _month_index(start_ms)
    step = interval_ms(interval)
    assert step is not None
    return (end_ms - start_ms) // step


def step_back(interval: str, end_ms: int, bars: int) -> int:
    """The open time `bars` bars before the aligned `end_ms`."""
    if interval == "M":
        return _month_start(_month_index(end_ms) - bars)
    step = interval_ms(interval)
    assert step is not None
    return end_ms - bars * step


def windows_newest_first(interval: str, rng: BarRange, max_bars: int) -> Iterator[BarRange]:
    """Split a range into windows of at most `max_bars` bars, newest first (Bybit's page order)."""
    end = rng.end_ms
    while end > rng.start_ms:
        start = max(rng.start_ms, step_back(interval, end, max_bars))
        yield BarRange(start, end)
        end = start


def merge(ranges: Iterable[BarRange]) -> list[BarRange]:
    """Sorted, with overlapping or touching ranges joined."""
    out: list[BarRange] = []
    for r in sorted(ranges):
        if out and r.start_ms <= out[-1].end_ms:
            if r.end_ms > out[-1].end_ms:
                out[-1] = BarRange(out[-1].start_ms, r.end_ms)
        else:
            out.append(r)
    return out


def subtract(ranges: Iterable[BarRange], holes: Iterable[BarRange]) -> list[BarRange]:
    """The parts of `ranges` not covered by `holes`."""
    cut = merge(holes)
    out: list[BarRange] = []
    for r in merge(ranges):
        start = r.start_ms
        for h in cut:
            if h.end_ms <= start or h.start_ms >= r.end_ms:
                continue
            if h.start_ms > start:
                out.append(BarRange(start, h.start_ms))
            start = max(start, h.end_ms)
            if start >= r.end_ms:
                break
        if start < r.end_ms:
            out.append(BarRange(start, r.end_ms))
    return out


def missing_opens(interval: str, window: BarRange, present: Iterable[int]) -> list[BarRange]:
    """The ranges of `window` with no open time in `present`."""
    have = sorted(o for o in set(present) if window.start_ms <= o < window.end_ms)
    out: list[BarRange] = []
    cursor = window.start_ms
    for o in have:
        if o > cursor:
            out.append(BarRange(cursor, o))
        cursor = next_open_ms(interval, o)
    if cursor < window.end_ms:
        out.append(BarRange(cursor, window.end_ms))
    return out
