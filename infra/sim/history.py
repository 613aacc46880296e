"""GET /v5/market/kline semantics over the market model.

Exactly like Bybit: rows newest first; `start`/`end` are matched against the
bar's open time, inclusive on both ends; with no `end` the first row is the
still-open bar; `start` alone anchors the window at `start`; bars inside a
configured hole do not exist (the page reaches further back instead).
"""

from __future__ import annotations

from typing import Iterable, Iterator

from infra.sim.instruments import fixed
from infra.sim.market import Bar, Hole, SymbolModel
from messages.types import align_ms, interval_ms, next_open_ms

MAX_LIMIT = 1000
DEFAULT_LIMIT = 200


def select_opens(
    interval: str, now: int, launch_ms: int, start: int | None, end: int | None, limit: int, holes: Iterable[Hole]
) -> list[int]:
    """Open times of the bars a kline request returns, newest first."""
    holes = [h for h in holes if h.interval is None or h.interval == interval]
    lowest = _align_up(interval, max(start or 0, launch_ms))
    newest_allowed = align_ms(interval, now)
    out: list[int] = []
    if start is not None and end is None:
        t = lowest
        while t <= newest_allowed and len(out) < limit:
            if not any(h.covers(interval, t) for h in holes):
                out.append(t)
            t = next_open_ms(interval, t)
        out.reverse()
        return out
    newest = min(end if end is not None else now, now)
    if newest < lowest:
        return []
    for t in _bar_opens_desc(interval, lowest, newest):
        if holes and any(h.covers(interval, t) for h in holes):
            continue
        out.append(t)
        if len(out) >= limit:
            break
    return out


def bars_for(model: SymbolModel, interval: str, opens_desc: list[int], now: int) -> list[Bar]:
    """Bars for the given open times (newest first), the newest possibly still running."""
    if not opens_desc:
        return []
    out: list[Bar] = []
    opens = list(reversed(opens_desc))
    running = None
    if next_open_ms(interval, opens[-1]) > now:
        running = model.running_bar(interval, opens[-1], now)
        opens = opens[:-1]
    # Consecutive runs (holes split them) are computed as arrays.
    i = 0
    while i < len(opens):
        j = i
        while j + 1 < len(opens) and next_open_ms(interval, opens[j]) == opens[j + 1]:
            j += 1
        out.extend(model.closed_bars(interval, opens[i], j - i + 1))
        i = j + 1
    if running is not None:
        out.append(running)
    out.reverse()
    return out


def rest_row(model: SymbolModel, bar: Bar) -> list[str]:
    p = model.inst.price_str
    return [str(bar.open_ms), p(bar.o), p(bar.h), p(bar.l), p(bar.c), model.inst.qty_str(bar.v), fixed(bar.t, 4)]


def ws_kline(model: SymbolModel, interval: str, bar: Bar, confirm: bool, ts: int) -> dict:
    p = model.inst.price_str
    return {
        "start": bar.open_ms,
        "end": next_open_ms(interval, bar.open_ms) - 1,
        "interval": interval,
        "open": p(bar.o),
        "close": p(bar.c),
        "high": p(bar.h),
        "low": p(bar.l),
        "volume": model.inst.qty_str(bar.v),
        "turnover": fixed(bar.t, 4),
        "confirm": confirm,
        # The last match inside the bar: never after the bar's last millisecond.
        "timestamp": min(ts, next_open_ms(interval, bar.open_ms) - 1),
    }


def _bar_opens_desc(interval: str, lowest: int, newest: int) -> Iterator[int]:
    """Open times from the bar containing `newest` down to the first >= `lowest`, newest first."""
    t = align_ms(interval, newest)
    step = interval_ms(interval)
    while t >= lowest:
        yield t
        if step is not None:
            t -= step
        else:
            t = align_ms("M", t - 1)


def _align_up(interval: str, t: int) -> int:
    a = align_ms(interval, t)
    return a if a == t else next_open_ms(interval, a)
