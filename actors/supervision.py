"""Supervision decisions in the OTP manner, kept free of threads so they can be tested alone.

The Supervisor actor notices three things and asks `RestartBook` what to do:
a child that died (its `on_failure` told it), a child that missed its
heartbeat deadline (stuck or silently stopped), and a socket whose streams
went stale. The book answers with a `Restart` after some delay or an
`Escalate`: at most `max_restarts` restarts within `window_s` seconds
across all children (OTP's restart intensity), after which looping is
worse than degrading, so trading is reduced and the operator is told.

Backoff: the first restart of a child inside the window is immediate (a
dropped socket must be back within seconds), each further one waits
`backoff_s * 2**(n-2)` capped at `backoff_max_s`. Once escalated, a child is
still retried, but only every `backoff_max_s`, so the node recovers by
itself when the venue comes back without ever spinning.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Callable


class RestartType(StrEnum):
    PERMANENT = "permanent"  # restarted whatever ended it
    TRANSIENT = "transient"  # restarted after an abnormal end only (failure, hang, staleness)
    TEMPORARY = "temporary"  # never restarted


class Cause(StrEnum):
    FAILED = "failed"  # the child's handler raised; Pykka stopped it
    HEARTBEAT_MISSED = "heartbeat_missed"  # no answer to a Ping within the deadline
    STALE = "stale"  # its streams delivered nothing within the window
    START_FAILED = "start_failed"  # the replacement's on_start raised
    STOPPED = "stopped"  # it stopped cleanly without being asked to


@dataclass(frozen=True)
class Restart:
    delay_s: float
    attempt: int  # restarts of this child inside the window, this one included
    restarts_in_window: int  # across all children


@dataclass(frozen=True)
class Escalate:
    restarts_in_window: int
    retry_in_s: float  # the child is still retried, at this slow pace


@dataclass(frozen=True)
class Leave:
    """Not restarted: a temporary child, or a transient one that ended normally."""

    why: str


Decision = Restart | Escalate | Leave


@dataclass
class RestartBook:
    max_restarts: int
    window_s: float
    backoff_s: float
    backoff_max_s: float
    clock: Callable[[], float] = time.monotonic
    _all: deque[float] = field(default_factory=deque)
    _per_child: dict[str, deque[float]] = field(default_factory=dict)
    escalated: bool = False

    def decide(self, child: str, restart_type: RestartType, cause: Cause) -> Decision:
        if restart_type is RestartType.TEMPORARY:
            return Leave("temporary child")
        if restart_type is RestartType.TRANSIENT and cause is Cause.STOPPED:
            return Leave("transient child ended normally")
        now = self.clock()
        self._expire(now)
        mine = self._per_child.setdefault(child, deque())
        if len(self._all) >= self.max_restarts:
            self.escalated = True
            return Escalate(restarts_in_window=len(self._all), retry_in_s=self.backoff_max_s)
        self._all.append(now)
        mine.append(now)
        attempt = len(mine)
        delay = 0.0 if attempt == 1 else min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 2))
        return Restart(delay_s=delay, attempt=attempt, restarts_in_window=len(self._all))

    def restarts_in_window(self) -> int:
        self._expire(self.clock())
        return len(self._all)

    def calm(self) -> bool:
        """True once the window holds no restart: an escalation may be lifted."""
        return self.restarts_in_window() == 0

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s
        for times in (self._all, *self._per_child.values()):
            while times and times[0] <= horizon:
                times.popleft()
