"""The simulator's market clock: wall time, or a clock a test drives.

Everything market-facing (bar boundaries, funding times, envelope `time`,
push timestamps, DCP windows) reads this clock. Request authentication and
rate-limit reset headers use wall time instead, because they are checked
against the *client's* clock (pybit signs with `time.time()`).
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...


class WallClock:
    """Real time in milliseconds since the epoch."""

    manual = False

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that moves only when told to.

    Attached to a running simulator, `advance` hands the new time to the
    simulator's event loop, which walks there step by step (bars close,
    funding settles, stops trigger, DCP fires) and returns only when that
    work is done and its pushes are queued.
    """

    manual = True

    def __init__(self, start_ms: int | None = None):
        if start_ms is None:
            start_ms = wall_ms() // 60_000 * 60_000
        if start_ms <= 0:
            raise ValueError("start_ms must be a positive epoch timestamp in ms")
        self._now = int(start_ms)
        self._lock = threading.Lock()
        self._driver: Callable[[int], None] | None = None

    def now_ms(self) -> int:
        return self._now

    def advance(self, seconds: float) -> int:
        """Move time forward by `seconds` (>= 0); returns the new time in ms."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        target = self._now + round(seconds * 1000)
        return self.advance_to(target)

    def advance_to(self, target_ms: int) -> int:
        if target_ms < self._now:
            raise ValueError("time only moves forward")
        driver = self._driver
        if driver is None:
            self._now = target_ms
        else:
            driver(target_ms)
        return self._now

    # Called by the simulator only, from its event loop.
    def _set(self, t_ms: int) -> None:
        if t_ms < self._now:
            raise ValueError("time only moves forward")
        self._now = t_ms

    def _attach(self, driver: Callable[[int], None] | None) -> None:
        with self._lock:
            if driver is not None and self._driver is not None:
                raise RuntimeError("this ManualClock already drives a running simulator")
            self._driver = driver
