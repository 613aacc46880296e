"""Who may send the next request: priority lanes over Bybit's two limits.

Bybit enforces two budgets (REFERENCE.md 2.5):

* per IP: 600 requests per 5 s window over every host; a breach is an
  HTTP 403 ban of minutes. We keep our own sliding-window count and stay
  below `ip_limit` (default 500), and each lane must leave a share of it to
  the lanes above it. A history sync can therefore use at most 60 % of the
  budget, and a cancel always finds a free slot however hard it pushes.
* per UID and endpoint: a rolling 1 s window whose state comes back in the
  `X-Bapi-Limit*` headers of every answer; a breach is retCode 10006. We
  estimate each endpoint's remaining budget from the last headers and stop
  a lane before it would take the share reserved for the lanes above it.

On top: a 403 pauses every lane (callers get `IpBanned` at once, nothing is
sent until the ban ends), and a 10006 pauses that endpoint, for every lane,
until the venue's reset time. The panic lane ignores only the estimated
endpoint budget (a guess), never a ban or an explicit 10006.

Among waiters for IP slots the highest lane goes first, FIFO within a lane.
The limiter is thread-safe; each caller waits on its own thread.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass
from enum import IntEnum
from typing import Callable, Mapping

from infra.bybit.errors import IpBanned, RateLimited


class Lane(IntEnum):
    """Request classes, most urgent first. The value is the priority (lower wins)."""

    PANIC = 0
    CANCEL = 1
    ORDER = 2
    QUERY = 3
    BACKFILL = 4


# Share of the IP window a lane must leave unused for the lanes above it.
IP_RESERVE: Mapping[Lane, float] = {
    Lane.PANIC: 0.0,
    Lane.CANCEL: 0.0,
    Lane.ORDER: 0.1,
    Lane.QUERY: 0.2,
    Lane.BACKFILL: 0.4,
}

# Share of an endpoint's per-second limit a lane leaves for the lanes above it
# (the query lane and panic both read /v5/position/list, for instance).
ENDPOINT_RESERVE: Mapping[Lane, float] = {
    Lane.PANIC: 0.0,
    Lane.CANCEL: 0.0,
    Lane.ORDER: 0.0,
    Lane.QUERY: 0.2,
    Lane.BACKFILL: 0.3,
}

# Bybit's per-endpoint windows are one second long.
_ENDPOINT_WINDOW_S = 1.0
# An outranked waiter re-checks at least this often, so a missed wake-up costs little.
_RECHECK_S = 0.05


@dataclass
class _EndpointBudget:
    limit: int | None = None
    remaining: float | None = None
    observed_at: float = 0.0
    # The venue said the budget is spent until this (monotonic) time.
    reset_at: float | None = None
    # A 10006 answer: nobody sends here before this time.
    blocked_until: float = 0.0


@dataclass(frozen=True)
class LimitHeaders:
    """The three `X-Bapi-Limit*` response headers, each None when absent or unreadable."""

    limit: int | None
    remaining: int | None
    reset_ms: int | None

    @classmethod
    def parse(cls, headers: Mapping[str, str] | None) -> "LimitHeaders":
        if not headers:
            return cls(None, None, None)
        return cls(
            limit=_int_header(headers, "X-Bapi-Limit"),
            remaining=_int_header(headers, "X-Bapi-Limit-Status"),
            reset_ms=_int_header(headers, "X-Bapi-Limit-Reset-Timestamp"),
        )


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        # requests' CaseInsensitiveDict handles case; a plain dict may not.
        value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
    try:
        return int(str(value).strip()) if value is not None else None
    except ValueError:
        return None


class RateLimiter:
    """Admission control for every request the gateway sends.

    `acquire(lane, endpoint, timeout_s)` returns when the request may go,
    or raises `RateLimited` (could not be admitted within `timeout_s`;
    `retry_after_s` is the expected wait) or `IpBanned` (ban in force).
    """

    def __init__(
        self,
        *,
        ip_limit: int = 500,
        window_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if ip_limit < 1:
            raise ValueError("ip_limit must be at least 1")
        self._ip_limit = ip_limit
        self._window_s = window_s
        self._clock = clock
        self._cond = threading.Condition()
        self._sent: deque[float] = deque()
        self._waiting: set[tuple[int, int]] = set()
        self._seq = itertools.count()
        self._endpoints: dict[str, _EndpointBudget] = {}
        self._ban_until = 0.0
        self._granted = {lane: 0 for lane in Lane}

    # --- admission ---------------------------------------------------------

    def acquire(self, lane: Lane, endpoint: str, timeout_s: float) -> None:
        deadline = self._clock() + timeout_s
        ticket = (int(lane), next(self._seq))
        with self._cond:
            try:
                while True:
                    now = self._clock()
                    if now < self._ban_until:
                        raise IpBanned(
                            f"IP ban in force for {self._ban_until - now:.1f} s more",
                            endpoint=endpoint,
                            until_monotonic=self._ban_until,
                        )
                    endpoint_wait = self._endpoint_wait(lane, endpoint, now)
                    if endpoint_wait > 0:
                        self._leave_queue(ticket)
                        if now + endpoint_wait > deadline:
                            raise RateLimited(
                                f"endpoint budget spent for {endpoint_wait:.3f} s",
                                endpoint=endpoint,
                                retry_after_s=endpoint_wait,
                            )
                        self._cond.wait(endpoint_wait)
                        continue
                    ip_wait = self._ip_wait(lane, now)
                    if ip_wait == 0 and not self._outranked(ticket):
                        self._admit(lane, endpoint, now)
                        self._leave_queue(ticket)
                        return
                    self._waiting.add(ticket)
                    left = deadline - now
                    if left <= 0:
                        raise RateLimited(
                            f"no IP slot for lane {lane.name} within {timeout_s:.3f} s",
                            endpoint=endpoint,
                            retry_after_s=max(ip_wait, _RECHECK_S),
                        )
                    self._cond.wait(min(ip_wait or _RECHECK_S, left))
            finally:
                self._leave_queue(ticket)

    def _leave_queue(self, ticket: tuple[int, int]) -> None:
        if ticket in self._waiting:
            self._waiting.discard(ticket)
            self._cond.notify_all()

    def _outranked(self, ticket: tuple[int, int]) -> bool:
        # A waiter with a better ticket is eligible whenever we are: lanes
        # above us may use at least as much of the window as we may.
        return any(other < ticket for other in self._waiting)

    def _admit(self, lane: Lane, endpoint: str, now: float) -> None:
        self._sent.append(now)
        self._granted[lane] += 1
        budget = self._endpoints.get(endpoint)
        if budget is not None and budget.remaining is not None:
            budget.remaining = self._estimate(budget, now) - 1
            budget.observed_at = now
            budget.reset_at = None if budget.reset_at is not None and now >= budget.reset_at else budget.reset_at

    def _ip_wait(self, lane: Lane, now: float) -> float:
        horizon = now - self._window_s
        while self._sent and self._sent[0] <= horizon:
            self._sent.popleft()
        allowed = max(1, int(self._ip_limit * (1.0 - IP_RESERVE[lane])))
        used = len(self._sent)
        if used < allowed:
            return 0.0
        # The (used - allowed + 1) oldest sends must leave the window first.
        return max(self._sent[used - allowed] + self._window_s - now, 1e-3)

    def _estimate(self, budget: _EndpointBudget, now: float) -> float:
        assert budget.limit is not None and budget.remaining is not None
        if budget.reset_at is not None:
            return float(budget.limit) if now >= budget.reset_at else budget.remaining
        # Rolling one-second window: slots come back at about `limit` per second.
        regained = (now - budget.observed_at) * budget.limit / _ENDPOINT_WINDOW_S
        return min(float(budget.limit), budget.remaining + regained)

    def _endpoint_wait(self, lane: Lane, endpoint: str, now: float) -> float:
        budget = self._endpoints.get(endpoint)
        if budget is None:
            return 0.0
        if now < budget.blocked_until:
            return budget.blocked_until - now
        if lane is Lane.PANIC or budget.limit is None or budget.remaining is None or budget.limit <= 0:
            return 0.0
        estimate = self._estimate(budget, now)
        needed = 1.0 + ENDPOINT_RESERVE[lane] * budget.limit
        if estimate >= needed:
            return 0.0
        if budget.reset_at is not None and now < budget.reset_at:
            return budget.reset_at - now
        return max((needed - estimate) * _ENDPOINT_WINDOW_S / budget.limit, 1e-3)

    # --- what the venue told us --------------------------------------------

    def observe(self, endpoint: str, headers: LimitHeaders, *, reset_in_s: float | None = None) -> None:
        """Record an answer's limit headers. `reset_in_s`: how far in the future the reset lies."""
        if headers.limit is None and headers.remaining is None:
            return
        now = self._clock()
        with self._cond:
            budget = self._endpoints.setdefault(endpoint, _EndpointBudget())
            budget.limit = headers.limit if headers.limit is not None else budget.limit
            budget.remaining = float(headers.remaining) if headers.remaining is not None else None
            budget.observed_at = now
            # The reset header is only a promise when it lies ahead; otherwise
            # Bybit just echoes the current time.
            budget.reset_at = now + reset_in_s if reset_in_s is not None and reset_in_s > 0 else None
            self._cond.notify_all()

    def rate_limited(self, endpoint: str, retry_after_s: float) -> None:
        """The venue answered 10006: nobody sends to `endpoint` for `retry_after_s`."""
        now = self._clock()
        with self._cond:
            budget = self._endpoints.setdefault(endpoint, _EndpointBudget())
            budget.blocked_until = max(budget.blocked_until, now + retry_after_s)
            if budget.remaining is not None:
                budget.remaining = 0.0
                budget.observed_at = now
            self._cond.notify_all()

    def ban(self, pause_s: float) -> float:
        """HTTP 403: every lane pauses for `pause_s`. Returns the (monotonic) end of the ban."""
        with self._cond:
            self._ban_until = max(self._ban_until, self._clock() + pause_s)
            self._cond.notify_all()
            return self._ban_until

    def now(self) -> float:
        return self._clock()

    # --- introspection -----------------------------------------------------

    def ban_remaining_s(self) -> float:
        with self._cond:
            return max(0.0, self._ban_until - self._clock())

    def stats(self) -> dict[str, object]:
        """Figures for `node.metrics`: window use, waiters per lane, grants per lane."""
        with self._cond:
            now = self._clock()
            self._ip_wait(Lane.PANIC, now)  # purges the window
            waiting = {lane.name.lower(): 0 for lane in Lane}
            for lane_value, _ in self._waiting:
                waiting[Lane(lane_value).name.lower()] += 1
            return {
                "ip_window_used": len(self._sent),
                "ip_limit": self._ip_limit,
                "ban_remaining_s": round(max(0.0, self._ban_until - now), 3),
                "waiting": waiting,
                "granted": {lane.name.lower(): n for lane, n in self._granted.items()},
            }
