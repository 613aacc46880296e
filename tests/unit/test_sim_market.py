"""The simulator's market model: seeded, evaluable anywhere, consistent across intervals."""

from __future__ import annotations

import numpy as np
import pytest

from infra.sim.history import bars_for, select_opens
from infra.sim.ids import IdSource, stream_key, uniform, uniform_array
from infra.sim.instruments import instrument_for
from infra.sim.market import MIN_MS, Hole, SymbolModel
from messages.types import next_open_ms

NOW = 1_760_000_000_000 + 37_123  # mid-minute
H = 3_600_000


def model(seed: int = 7, symbol: str = "BTCUSDT") -> SymbolModel:
    return SymbolModel(instrument_for(symbol, seed), seed)


def test_vectorised_noise_is_bit_identical_to_scalar():
    key = stream_key(7, "BTCUSDT", "x")
    n = np.arange(1_000_000, 1_000_500, dtype=np.int64)
    assert uniform_array(key, n).tolist() == [uniform(key, int(i)) for i in n]


def test_ids_are_deterministic_per_seed():
    a, b, c = IdSource(7), IdSource(7), IdSource(8)
    seq_a = [a.uuid("order") for _ in range(3)]
    assert seq_a == [b.uuid("order") for _ in range(3)]
    assert seq_a != [c.uuid("order") for _ in range(3)]
    assert len(set(seq_a)) == 3 and all(len(x) == 36 for x in seq_a)


def bars(m: SymbolModel, interval: str, end: int, limit: int, now: int = NOW):
    opens = select_opens(interval, now, m.inst.launch_ms, None, end, limit, [])
    return bars_for(m, interval, opens, now)


def test_bars_are_a_pure_function_of_seed_symbol_and_time():
    one, two = model(), model()
    # Different access order and cache state must not matter.
    b_day = bars(two, "D", NOW, 30)
    assert bars(one, "1", NOW - H, 300) == bars(two, "1", NOW - H, 300)
    assert bars(one, "D", NOW, 30) == b_day
    assert bars(model(seed=8), "1", NOW - H, 300) != bars(one, "1", NOW - H, 300)


@pytest.mark.parametrize("interval,k", [("3", 3), ("5", 5), ("15", 15), ("60", 60), ("240", 240), ("D", 1440)])
def test_higher_intervals_aggregate_the_one_minute_series(interval, k):
    m = model()
    higher = bars(m, interval, NOW - 3 * 86_400_000, 4)[::-1]
    first = higher[0].open_ms
    ones = m.closed_bars("1", first, 4 * k)
    assert len(ones) == 4 * k and ones[0].open_ms == first
    for i, bar in enumerate(higher):
        chunk = ones[i * k:(i + 1) * k]
        assert bar.open_ms == chunk[0].open_ms
        assert (bar.o, bar.c) == (chunk[0].o, chunk[-1].c)
        assert bar.h == max(b.h for b in chunk) and bar.l == min(b.l for b in chunk)
        assert bar.v == sum(b.v for b in chunk) and bar.t == sum(b.t for b in chunk)


def test_each_bar_opens_at_the_previous_close_and_is_consistent():
    m = model()
    series = bars(m, "1", NOW, 1000)[::-1]
    assert all(a.c == b.o for a, b in zip(series, series[1:]))
    assert all(b.l <= min(b.o, b.c) <= max(b.o, b.c) <= b.h for b in series)
    assert all(b.v > 0 for b in series[:-1])


def test_open_bar_grows_into_the_closed_bar():
    m = model()
    open_ms = NOW // MIN_MS * MIN_MS
    running = m.running_bar("1", open_ms, open_ms + 59_999)
    closed = m.closed_bars("1", open_ms, 1)[0]
    assert (running.o, running.h, running.l, running.c) == (closed.o, closed.h, closed.l, closed.c)
    assert m.last_ticks(open_ms + 60_000) == closed.c


def test_month_bars_span_calendar_months():
    m = model()
    months = bars(m, "M", NOW, 5)[::-1]
    for a, b in zip(months, months[1:]):
        assert next_open_ms("M", a.open_ms) == b.open_ms
        assert a.c == b.o


def test_a_shock_moves_the_price_and_leaves_the_past_alone():
    m = model()
    t = NOW
    before = bars(m, "1", t - 120_000, 50)
    target = m.last_ticks(t) * 9 // 10
    m.shock(t, target)
    assert m.last_ticks(t) == target
    assert bars(m, "1", t - 120_000, 50) == before
    bar = m.running_bar("1", t // MIN_MS * MIN_MS, t)
    assert bar.l <= target and bar.c == target
    # The following bars continue from the new level.
    later = m.closed_bars("1", t // MIN_MS * MIN_MS + MIN_MS, 3)
    assert abs(later[0].o - target) < target * 0.01
    closed = m.closed_bars("1", t // MIN_MS * MIN_MS, 1)[0]
    assert closed.c == later[0].o


def test_funding_rate_is_sometimes_exactly_zero():
    m = model()
    rates = [m.funding_rate_e6(k * 8 * H) for k in range(20_000, 20_200)]
    zeros = rates.count(0)
    assert 20 < zeros < 100
    assert any(r > 0 for r in rates) and any(r < 0 for r in rates)


def test_kline_selection_matches_bybit():
    m = model()
    launch = m.inst.launch_ms
    start = 1_670_601_600_000
    # The documentation's example: start/end inclusive on the bar's open time.
    opens = select_opens("60", NOW, launch, start, start + 2 * H, 200, [])
    assert opens == [start + 2 * H, start + H, start]
    # No end: the first row is the bar still open now.
    latest = select_opens("1", NOW, launch, None, None, 3, [])
    assert latest[0] == NOW // MIN_MS * MIN_MS and latest == sorted(latest, reverse=True)
    # start alone anchors the window at start.
    assert select_opens("1", NOW, launch, start, None, 2, []) == [start + MIN_MS, start]
    # Nothing before the listing, nothing after now.
    assert select_opens("D", NOW, launch, 0, launch - 1, 10, []) == []
    assert select_opens("1", NOW, launch, NOW + H, NOW + 2 * H, 10, []) == []


def test_holes_remove_bars_and_the_page_reaches_further_back():
    m = model()
    end = NOW // MIN_MS * MIN_MS - 10 * MIN_MS
    hole = Hole(end - 4 * MIN_MS, end - 2 * MIN_MS, None)
    opens = select_opens("1", NOW, m.inst.launch_ms, None, end, 5, [hole])
    assert opens == [end, end - MIN_MS, end - 5 * MIN_MS, end - 6 * MIN_MS, end - 7 * MIN_MS]
    other_interval = Hole(end - 4 * MIN_MS, end - 2 * MIN_MS, "5")
    assert len(select_opens("1", NOW, m.inst.launch_ms, end - 4 * MIN_MS, end, 10, [other_interval])) == 5
