"""Range arithmetic over bar open times, including the calendar intervals (W, M)."""

from __future__ import annotations

from datetime import datetime

import pytest

from infra.store.ranges import (
    BarRange,
    ceil_open_ms,
    count_bars,
    merge,
    missing_opens,
    prev_open_ms,
    step_back,
    subtract,
    windows_newest_first,
)
from messages.types import UTC, utc_to_ms

pytestmark = pytest.mark.timeout(10)


def ms(*args: int) -> int:
    return utc_to_ms(datetime(*args, tzinfo=UTC))


def test_months_have_their_own_lengths():
    assert count_bars("M", ms(2024, 1, 1), ms(2025, 1, 1)) == 12
    assert prev_open_ms("M", ms(2024, 3, 1)) == ms(2024, 2, 1)
    assert prev_open_ms("M", ms(2024, 1, 1)) == ms(2023, 12, 1)
    assert step_back("M", ms(2024, 3, 1), 14) == ms(2023, 1, 1)


def test_weeks_start_on_monday():
    # 2024-01-01 is a Monday; the week containing Wednesday 2024-01-03 opens then.
    assert prev_open_ms("W", ms(2024, 1, 3)) == ms(2024, 1, 1)
    assert ceil_open_ms("W", ms(2024, 1, 3)) == ms(2024, 1, 8)
    assert count_bars("W", ms(2024, 1, 1), ms(2024, 2, 5)) == 5


def test_windows_cover_a_range_newest_first_without_overlap():
    rng = BarRange(ms(2024, 1, 1), ms(2024, 1, 1, 0, 25))
    windows = list(windows_newest_first("1", rng, 10))
    assert [w.bars("1") for w in windows] == [10, 10, 5]
    assert windows[0].end_ms == rng.end_ms and windows[-1].start_ms == rng.start_ms
    assert all(a.start_ms == b.end_ms for a, b in zip(windows, windows[1:]))


def test_subtract_and_merge():
    a = BarRange(0, 100)
    assert subtract([a], [BarRange(10, 20), BarRange(15, 30), BarRange(90, 200)]) == [BarRange(0, 10), BarRange(30, 90)]
    assert subtract([a], [BarRange(0, 100)]) == []
    assert merge([BarRange(5, 10), BarRange(0, 5), BarRange(20, 30)]) == [BarRange(0, 10), BarRange(20, 30)]


def test_missing_opens_inside_a_window():
    step = 60_000
    window = BarRange(0, 10 * step)
    present = [i * step for i in (0, 1, 4, 9)]
    assert missing_opens("1", window, present) == [BarRange(2 * step, 4 * step), BarRange(5 * step, 9 * step)]
    assert missing_opens("1", window, []) == [window]


def test_empty_range_is_refused():
    with pytest.raises(ValueError):
        BarRange(5, 5)
