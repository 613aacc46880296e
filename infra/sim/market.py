"""The seeded market model: a price you can evaluate at any minute, and its bars.

Every 1-minute bar is a pure function of (seed, symbol, minute) plus the
price shocks a test applied with `set_price`; nothing walks from the epoch.
The close of minute m is

    p0 * W(m) * (1 + smooth noise at 4 h, 1 h, 15 min + white noise)

where W is a slow level interpolated between weekly knots, and each smooth
term is seeded value noise. The bar opens at the previous close; high and
low extend beyond open/close by seeded amounts. Inside a minute the price
follows a piecewise-linear path open -> high -> low -> close (or via the low
first), which is what live tickers, running klines and stop triggers see.
Higher intervals are aggregated from the 1-minute bars (open of the first,
close of the last, max/min, sums), so every interval agrees with every other.

All prices are integers in ticks, volumes in qty steps, turnover in 1e-4
USDT. Floating point is used only with +, -, *, / and floor, whose results
are exact IEEE operations, so numpy and scalar evaluations agree bit for bit.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from infra.sim.ids import stream_key, uniform, uniform_array
from infra.sim.instruments import Instrument
from messages.types import interval_ms, next_open_ms

MIN_MS = 60_000
DAY_MIN = 1440
HOUR_MIN = 60
WEEK_MIN = 10_080
FUNDING_MS = 8 * 3_600_000
_KNOT_OFFSETS = (0, 20_000, 40_000, 60_000)
_HL_WIDTH = 0.0009  # how far high/low reach beyond open/close, relative
# Amplitudes of the weekly level's terms (log price) and of the minute noise's terms (relative):
# they bound every price the model makes (`SymbolModel.price_bounds`).
_LEVEL_AMPS = (0.35, 0.15, 0.06, 0.02)
_NOISE_AMPS = (0.012, 0.005, 0.002, 0.0006)
# Largest distance of the mark / index price from the last price, relative.
MARK_BASIS = 0.0003
INDEX_BASIS = 0.0002
_DAY_CACHE = 96  # days of minute arrays kept per symbol


class Bar(NamedTuple):
    """One OHLCV bar: prices in ticks, volume in qty steps, turnover in 1e-4 USDT."""

    open_ms: int
    o: int
    h: int
    l: int
    c: int
    v: int
    t: int


def _combine(parts: list[tuple[int, int, int, int, int, int]]) -> tuple[int, int, int, int, int, int] | None:
    if not parts:
        return None
    return (
        parts[0][0],
        max(p[1] for p in parts),
        min(p[2] for p in parts),
        parts[-1][3],
        sum(p[4] for p in parts),
        sum(p[5] for p in parts),
    )


def _rnd(x: np.ndarray) -> np.ndarray:
    return np.floor(x + 0.5).astype(np.int64)


def _rnd1(x: float) -> int:
    return math.floor(x + 0.5)


@dataclass
class _Day:
    first: int  # minute index of 00:00 UTC
    bo: np.ndarray  # base (unshocked) path knots, in ticks
    bh: np.ndarray
    bl: np.ndarray
    bc: np.ndarray
    up: np.ndarray  # path visits the high before the low
    o: np.ndarray  # final bars (shocks applied), int64 ticks
    h: np.ndarray
    l: np.ndarray
    c: np.ndarray
    v: np.ndarray
    t: np.ndarray


class SymbolModel:
    """Prices and bars of one symbol. Not thread-safe: the simulator's loop owns it."""

    def __init__(self, inst: Instrument, seed: int):
        self.inst = inst
        self.seed = seed
        key = lambda *n: stream_key(seed, inst.symbol, *n)  # noqa: E731
        self._k_level = [key("level", i) for i in range(4)]
        self._k_noise = [key("noise", i) for i in range(4)]
        self._k_high, self._k_low, self._k_up, self._k_vol = key("high"), key("low"), key("up"), key("vol")
        self._k_mark, self._k_index, self._k_oi = key("mark"), key("index"), key("oi")
        self._k_book, self._k_fund0, self._k_fund1 = key("book"), key("fund0"), key("fund1")
        self._p0_ticks = float(inst.p0 / inst.tick)
        self._vol_steps = float(inst.volume_per_min / inst.qty_step)
        self._turnover_k = float(inst.qty_step * inst.tick * 10_000) / 4.0
        self._knots: dict[int, float] = {}
        self._days: OrderedDict[int, _Day] = OrderedDict()
        self._hour_agg: dict[int, tuple[np.ndarray, ...]] = {}
        self._day_agg: dict[int, tuple[int, int, int, int, int, int]] = {}
        self._shock_ts: list[int] = []
        self._shock_f: list[float] = []

    def price_bounds(self) -> tuple[int, int]:
        """Lowest and highest price (ticks) the model can make for any seed and minute, shocks aside.

        Each noise term stays within its amplitude, the level between its
        weekly knots, and high/low within _HL_WIDTH of open/close: what a
        client sizing orders for this symbol can rely on.
        """
        level = math.exp(sum(_LEVEL_AMPS))
        noise = sum(_NOISE_AMPS)
        low = self._p0_ticks / level * (1.0 - noise) * (1.0 - _HL_WIDTH)
        high = self._p0_ticks * level * (1.0 + noise) * (1.0 + _HL_WIDTH)
        return math.floor(low), math.ceil(high) + 1  # the +1: rounding to ticks is half up

    # --- the base series -------------------------------------------------

    def _knot(self, j: int) -> float:
        """Level multiplier at the start of week j (exp of smooth seeded noise)."""
        k = self._knots.get(j)
        if k is None:
            g = (
                _LEVEL_AMPS[0] * self._vnoise1(j, 32, self._k_level[0])
                + _LEVEL_AMPS[1] * self._vnoise1(j, 8, self._k_level[1])
                + _LEVEL_AMPS[2] * self._vnoise1(j, 2, self._k_level[2])
                + _LEVEL_AMPS[3] * (2.0 * uniform(self._k_level[3], j) - 1.0)
            )
            k = self._knots[j] = math.exp(g)
        return k

    @staticmethod
    def _vnoise1(n: int, period: int, key: int) -> float:
        k = n // period
        f = (n - k * period) / period
        s = f * f * (3.0 - 2.0 * f)
        a = 2.0 * uniform(key, k) - 1.0
        b = 2.0 * uniform(key, k + 1) - 1.0
        return a + (b - a) * s

    @staticmethod
    def _vnoise(m: np.ndarray, period: int, key: int) -> np.ndarray:
        k = m // period
        f = (m - k * period).astype(np.float64) / float(period)
        s = f * f * (3.0 - 2.0 * f)
        a = 2.0 * uniform_array(key, k) - 1.0
        b = 2.0 * uniform_array(key, k + 1) - 1.0
        return a + (b - a) * s

    def _base_close(self, m: np.ndarray) -> np.ndarray:
        j = m // WEEK_MIN
        j0 = int(j.min())
        knots = np.array([self._knot(x) for x in range(j0, int(j.max()) + 2)])
        a = knots[j - j0]
        b = knots[j - j0 + 1]
        f = (m - j * WEEK_MIN).astype(np.float64) / float(WEEK_MIN)
        level = a + (b - a) * f
        noise = (
            _NOISE_AMPS[0] * self._vnoise(m, 240, self._k_noise[0])
            + _NOISE_AMPS[1] * self._vnoise(m, 60, self._k_noise[1])
            + _NOISE_AMPS[2] * self._vnoise(m, 15, self._k_noise[2])
            + _NOISE_AMPS[3] * (2.0 * uniform_array(self._k_noise[3], m) - 1.0)
        )
        return self._p0_ticks * level * (1.0 + noise)

    # --- shocks (set_price) ---------------------------------------------------

    def _factor_before(self, t: int) -> float:
        """Price multiplier in force just before time t (shocks at ts < t)."""
        i = bisect.bisect_left(self._shock_ts, t)
        return self._shock_f[i - 1] if i else 1.0

    def _factor_at(self, t: int) -> float:
        i = bisect.bisect_right(self._shock_ts, t)
        return self._shock_f[i - 1] if i else 1.0

    def last_shock_ms(self) -> int | None:
        return self._shock_ts[-1] if self._shock_ts else None

    def shock(self, t: int, price_ticks: int) -> None:
        """From time t on, the price path is rescaled so that it passes through `price_ticks`."""
        if self._shock_ts and t < self._shock_ts[-1]:
            raise ValueError("shocks must be applied in time order")
        base = self._base_path(t // MIN_MS, t % MIN_MS)
        self._shock_ts.append(t)
        self._shock_f.append(price_ticks / base)
        day = t // MIN_MS // DAY_MIN
        for d in [d for d in self._days if d >= day]:
            del self._days[d]
        for cache in (self._hour_agg, self._day_agg):
            for d in [d for d in cache if d >= day]:
                del cache[d]

    # --- minute arrays ------------------------------------------------------------

    def _day(self, d: int) -> _Day:
        day = self._days.get(d)
        if day is not None:
            self._days.move_to_end(d)
            return day
        first = d * DAY_MIN
        m = np.arange(first - 1, first + DAY_MIN, dtype=np.int64)
        close = self._base_close(m)
        mm = m[1:]
        bo, bc = close[:-1], close[1:]
        bh = np.maximum(bo, bc) * (1.0 + _HL_WIDTH * uniform_array(self._k_high, mm))
        bl = np.minimum(bo, bc) * (1.0 - _HL_WIDTH * uniform_array(self._k_low, mm))
        up = uniform_array(self._k_up, mm) < 0.5
        v = np.floor(self._vol_steps * (0.2 + 1.6 * uniform_array(self._k_vol, mm))).astype(np.int64)
        starts = mm * MIN_MS
        if self._shock_ts:
            ts = np.array(self._shock_ts, dtype=np.int64)
            fs = np.array([1.0, *self._shock_f])
            i_open = np.searchsorted(ts, starts, side="left")
            i_close = np.searchsorted(ts, starts + MIN_MS, side="left")
            f = fs[i_open]
        else:
            i_open = i_close = None
            f = 1.0
        o, h, l, c = _rnd(bo * f), _rnd(bh * f), _rnd(bl * f), _rnd(bc * f)
        day = _Day(first, bo, bh, bl, bc, up, o, h, l, c, v, v)
        if i_open is not None:
            for i in np.nonzero(i_open != i_close)[0]:
                o[i], h[i], l[i], c[i] = self._minute_exact(day, int(i), MIN_MS)
        day.t = _rnd((v * (o + h + l + c)).astype(np.float64) * self._turnover_k)
        self._days[d] = day
        while len(self._days) > _DAY_CACHE:
            self._days.popitem(last=False)
        return day

    def _knots_of(self, day: _Day, i: int) -> tuple[tuple[int, float], ...]:
        bo, bh, bl, bc = float(day.bo[i]), float(day.bh[i]), float(day.bl[i]), float(day.bc[i])
        x1, x2 = (bh, bl) if day.up[i] else (bl, bh)
        return ((0, bo), (20_000, x1), (40_000, x2), (60_000, bc))

    @staticmethod
    def _interp(knots: tuple[tuple[int, float], ...], off: int) -> float:
        for (a, va), (b, vb) in zip(knots, knots[1:]):
            if off <= b:
                return va + (vb - va) * ((off - a) / (b - a))
        return knots[-1][1]

    def _base_path(self, m: int, off: int) -> float:
        day = self._day(m // DAY_MIN)
        return self._interp(self._knots_of(day, m - day.first), off)

    def _minute_exact(self, day: _Day, i: int, end_off: int) -> tuple[int, int, int, int]:
        """(open, high, low, close) of minute i of `day` over [start, start + end_off], shocks included."""
        knots = self._knots_of(day, i)
        start = (day.first + i) * MIN_MS
        end = start + end_off
        lo_i = bisect.bisect_left(self._shock_ts, start)
        hi_i = bisect.bisect_right(self._shock_ts, end)
        cuts = [ts for ts in self._shock_ts[lo_i:hi_i] if ts < start + MIN_MS]
        f = self._factor_before(start)
        open_v = knots[0][1] * f
        values = [open_v]
        a = start
        for k, boundary in enumerate([*cuts, end]):
            for off, v in knots:
                if a - start < off < boundary - start:
                    values.append(v * f)
            values.append(self._interp(knots, a - start) * f)
            values.append(self._interp(knots, boundary - start) * f)
            if k < len(cuts):
                f = self._shock_f[lo_i + k]
            a = boundary
        close_v = self._interp(knots, end_off) * (self._factor_before(end) if end_off == MIN_MS else f)
        values.append(close_v)
        return _rnd1(open_v), _rnd1(max(values)), _rnd1(min(values)), _rnd1(close_v)

    # --- live values -------------------------------------------------------------

    def last_ticks(self, t: int) -> int:
        m, off = divmod(t, MIN_MS)
        return _rnd1(self._base_path(m, off) * self._factor_at(t))

    def path_knots(self, t0: int, t1: int) -> list[int]:
        """Times in (t0, t1) where the intra-minute path turns, plus minute starts."""
        out = []
        m0 = t0 // MIN_MS
        for m in range(m0, t1 // MIN_MS + 1):
            for off in _KNOT_OFFSETS[:3]:
                t = m * MIN_MS + off
                if t0 < t < t1:
                    out.append(t)
        return out

    def minute_partial(self, t: int) -> tuple[int, int, int, int, int, int]:
        """The minute containing t, as seen at time t: (o, h, l, c, v, turnover)."""
        m, off = divmod(t, MIN_MS)
        day = self._day(m // DAY_MIN)
        i = m - day.first
        o, h, l, c = self._minute_exact(day, i, off)
        v = int(day.v[i]) * off // MIN_MS
        turnover = int(day.t[i]) * off // MIN_MS
        return o, h, l, c, v, turnover

    def mark_ticks(self, t: int, last: int) -> int:
        return self._basis_ticks(t, last, self._k_mark, MARK_BASIS)

    def index_ticks(self, t: int, last: int) -> int:
        return self._basis_ticks(t, last, self._k_index, INDEX_BASIS)

    def _basis_ticks(self, t: int, last: int, key: int, amplitude: float) -> int:
        m = t // MIN_MS
        b = amplitude * self._vnoise1(m, 5, key)
        shock = self.last_shock_ms()
        if shock is not None and t - shock < MIN_MS:
            b *= (t - shock) / MIN_MS  # right after set_price, every price is the set one
        return _rnd1(last * (1.0 + b))

    def book_sizes(self, t: int) -> tuple[int, int]:
        n = t // 1000
        scale = self._vol_steps / 4
        return 1 + int(scale * uniform(self._k_book, 2 * n)), 1 + int(scale * uniform(self._k_book, 2 * n + 1))

    def open_interest_steps(self, t: int) -> int:
        base = float(self.inst.open_interest / self.inst.qty_step)
        return int(base * (1.0 + 0.1 * self._vnoise1(t // MIN_MS, 240, self._k_oi)))

    def funding_rate_e6(self, funding_ms: int) -> int:
        """Funding rate (in 1e-6) settled at `funding_ms`; exactly 0 about a quarter of the time."""
        n = funding_ms // FUNDING_MS
        if uniform(self._k_fund0, n) < 0.25:
            return 0
        return math.floor((uniform(self._k_fund1, n) * 2.0 - 0.6) * 250.0)

    # --- aggregates ------------------------------------------------------------------

    def _hours(self, d: int) -> tuple[np.ndarray, ...]:
        agg = self._hour_agg.get(d)
        if agg is None:
            day = self._day(d)
            shape = (24, HOUR_MIN)
            agg = self._hour_agg[d] = (
                day.o.reshape(shape)[:, 0].copy(),
                day.h.reshape(shape).max(axis=1),
                day.l.reshape(shape).min(axis=1),
                day.c.reshape(shape)[:, -1].copy(),
                day.v.reshape(shape).sum(axis=1),
                day.t.reshape(shape).sum(axis=1),
            )
        return agg

    def _day_total(self, d: int) -> tuple[int, int, int, int, int, int]:
        agg = self._day_agg.get(d)
        if agg is None:
            o, h, l, c, v, t = self._hours(d)
            agg = self._day_agg[d] = (int(o[0]), int(h.max()), int(l.min()), int(c[-1]), int(v.sum()), int(t.sum()))
        return agg

    def _minutes_agg(self, m0: int, m1: int) -> tuple[int, int, int, int, int, int]:
        day = self._day(m0 // DAY_MIN)
        a, b = m0 - day.first, m1 - day.first
        return (int(day.o[a]), int(day.h[a:b].max()), int(day.l[a:b].min()), int(day.c[b - 1]),
                int(day.v[a:b].sum()), int(day.t[a:b].sum()))

    def aggregate(self, m0: int, m1: int) -> tuple[int, int, int, int, int, int] | None:
        """One bar over the complete minutes [m0, m1)."""
        parts = []
        cur = m0
        while cur < m1:
            if cur % DAY_MIN == 0 and cur + DAY_MIN <= m1:
                parts.append(self._day_total(cur // DAY_MIN))
                cur += DAY_MIN
            elif cur % HOUR_MIN == 0 and cur + HOUR_MIN <= m1:
                d = cur // DAY_MIN
                hrs = self._hours(d)
                i = (cur - d * DAY_MIN) // HOUR_MIN
                parts.append(tuple(int(x[i]) for x in hrs))  # type: ignore[arg-type]
                cur += HOUR_MIN
            else:
                end = min(m1, (cur // HOUR_MIN + 1) * HOUR_MIN)
                parts.append(self._minutes_agg(cur, end))
                cur = end
        return _combine(parts)

    def running_bar(self, interval: str, open_ms: int, now: int) -> Bar:
        """The bar of `interval` opened at `open_ms`, as it stands at `now` (open_ms <= now)."""
        m_now = now // MIN_MS
        done = self.aggregate(open_ms // MIN_MS, m_now)
        part = self.minute_partial(now)
        parts = [done, part] if done is not None else [part]
        o, h, l, c, v, t = _combine(parts)  # type: ignore[misc]
        return Bar(open_ms, o, h, l, c, v, t)

    def closed_bars(self, interval: str, first_open: int, count: int) -> list[Bar]:
        """`count` consecutive complete bars of `interval`, oldest first, from `first_open`."""
        if count <= 0:
            return []
        step = interval_ms(interval)
        if step is not None and step <= 30 * MIN_MS:
            k = step // MIN_MS
            m0 = first_open // MIN_MS
            arrays = self._minute_span(m0, m0 + count * k)
            return self._reduce(interval, first_open, arrays, k, count)
        if step is not None and step < DAY_MIN * MIN_MS:
            k = step // (HOUR_MIN * MIN_MS)
            h0 = first_open // (HOUR_MIN * MIN_MS)
            arrays = self._hour_span(h0, h0 + count * k)
            return self._reduce(interval, first_open, arrays, k, count)
        d0 = first_open // (DAY_MIN * MIN_MS)
        if interval == "M":
            opens = [first_open]
            for _ in range(count - 1):
                opens.append(next_open_ms("M", opens[-1]))
            d_end = next_open_ms("M", opens[-1]) // (DAY_MIN * MIN_MS)
            days = [self._day_total(d) for d in range(d0, d_end)]
            out = []
            for i, op in enumerate(opens):
                a = op // (DAY_MIN * MIN_MS) - d0
                b = (opens[i + 1] // (DAY_MIN * MIN_MS) - d0) if i + 1 < len(opens) else len(days)
                agg = _combine(days[a:b])
                out.append(Bar(op, *agg))  # type: ignore[misc]
            return out
        k = 1 if interval == "D" else 7
        days = [self._day_total(d) for d in range(d0, d0 + count * k)]
        return [Bar(first_open + i * step, *_combine(days[i * k:(i + 1) * k])) for i in range(count)]  # type: ignore[misc, operator]

    def minute_arrays(self, m0: int, m1: int) -> tuple[np.ndarray, ...]:
        """(open, high, low, close, volume, turnover) of the complete minutes [m0, m1), one array each."""
        return self._minute_span(m0, m1)

    def _minute_span(self, m0: int, m1: int) -> tuple[np.ndarray, ...]:
        cols: list[list[np.ndarray]] = [[] for _ in range(6)]
        cur = m0
        while cur < m1:
            day = self._day(cur // DAY_MIN)
            a = cur - day.first
            b = min(m1 - day.first, DAY_MIN)
            for col, arr in zip(cols, (day.o, day.h, day.l, day.c, day.v, day.t)):
                col.append(arr[a:b])
            cur = day.first + b
        return tuple(np.concatenate(c) for c in cols)

    def _hour_span(self, h0: int, h1: int) -> tuple[np.ndarray, ...]:
        cols: list[list[np.ndarray]] = [[] for _ in range(6)]
        cur = h0
        while cur < h1:
            d = cur // 24
            hrs = self._hours(d)
            a = cur - d * 24
            b = min(h1 - d * 24, 24)
            for col, arr in zip(cols, hrs):
                col.append(arr[a:b])
            cur = d * 24 + b
        return tuple(np.concatenate(c) for c in cols)

    @staticmethod
    def _reduce(interval: str, first_open: int, arrays: tuple[np.ndarray, ...], k: int, count: int) -> list[Bar]:
        o, h, l, c, v, t = (a.reshape(count, k) for a in arrays)
        step = interval_ms(interval)
        assert step is not None
        cols = (o[:, 0], h.max(axis=1), l.min(axis=1), c[:, -1], v.sum(axis=1), t.sum(axis=1))
        lists = [col.tolist() for col in cols]
        return [Bar(first_open + i * step, *row) for i, row in enumerate(zip(*lists))]


@dataclass(frozen=True)
class Hole:
    start_ms: int
    end_ms: int
    interval: str | None  # None: every interval

    def covers(self, interval: str, open_ms: int) -> bool:
        return (self.interval is None or self.interval == interval) and self.start_ms <= open_ms <= self.end_ms
