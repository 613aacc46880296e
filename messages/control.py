"""Control messages: liveness, failures and the trading state."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from messages.types import Message, UtcDatetime, now_utc


class TradingState(StrEnum):
    """ACTIVE: any order. REDUCING: reduce-only orders. HALTED: none."""

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


class TradingStateChanged(Message):
    state: TradingState
    previous: TradingState
    reason: str
    ts: UtcDatetime = Field(default_factory=now_utc)


class Heartbeat(Message):
    """A child's sign of life for the Supervisor; `generation` identifies the incarnation."""

    role: str
    generation: int = Field(ge=0)
    ts: UtcDatetime = Field(default_factory=now_utc)


class ChildFailed(Message):
    """Sent by a dying child's on_failure to the Supervisor."""

    role: str
    generation: int = Field(ge=0)
    error: str
    ts: UtcDatetime = Field(default_factory=now_utc)


class StreamStale(Message):
    """A stream produced no frames for longer than its window."""

    role: str
    generation: int = Field(ge=0)
    stream: str
    age_s: float = Field(ge=0)
    ts: UtcDatetime = Field(default_factory=now_utc)


class Ping(Message):
    """Readiness probe: every actor answers an ask of it with True."""


class FrameRejected(Message):
    """A WebSocket router refused a frame: counted against `stream` in the StateStore's health.

    `stream` is the frame's topic (its base, `order`, on the private socket),
    or `public` / `private` for a frame with no topic to charge it to.
    """

    stream: str
    reason: str = ""


class SocketStatus(Message):
    """A WebSocket actor tells the StateStore what its socket is doing.

    `topics` are the streams this socket is meant to carry (the desired set
    for the public socket): the StateStore counts only those toward `ready`,
    so a stream that was unsubscribed never holds readiness back and a new
    one is not-ready until it has delivered.
    """

    socket: Literal["public", "private"]
    generation: int = Field(ge=0)
    connected: bool
    topics: tuple[str, ...] = ()
    reason: str = ""
    ts: UtcDatetime = Field(default_factory=now_utc)


class ReadinessChanged(Message):
    """Told by the StateStore to Panic (owner of the trading state) whenever `ready` flips.

    `reasons` says why not ready (e.g. "wallet not seeded", "kline.1.BTCUSDT stale").
    """

    ready: bool
    reasons: tuple[str, ...] = ()
    stale_streams: tuple[str, ...] = ()
    ts: UtcDatetime = Field(default_factory=now_utc)


class RiskStatus(Message):
    """Told by Risk to Panic: whether today's PnL is seeded and whether the daily-loss latch is tripped."""

    seeded: bool
    latched: bool
    reason: str = ""
    ts: UtcDatetime = Field(default_factory=now_utc)


class SupervisorTick(Message):
    """Told to the Supervisor by its own timer thread: time to check heartbeats and freshness."""


class RestartDue(Message):
    """Told to the Supervisor by a backoff timer: start `role`'s replacement now."""

    role: str
    reason: str


class SupervisorEscalated(Message):
    """Told by the Supervisor to Panic: restarts went past the intensity limit (or calmed down again).

    While `active`, trading must not be above `state` (REDUCING or HALTED, by config).
    """

    active: bool
    state: TradingState
    reason: str
    ts: UtcDatetime = Field(default_factory=now_utc)


class NodeStopping(Message):
    """Told by the Supervisor to Panic and the StateStore as an orderly stop begins, before any
    child stops.

    Trading goes HALTED for the rest of the run ("node stopping"), so the sockets going
    down next read as what they are, not as stale data (REDUCING); the StateStore says
    the readiness it loses then at info, not as a warning.
    """

    ts: UtcDatetime = Field(default_factory=now_utc)


class Tick(Message):
    """A timer's nudge to an actor (Pykka has no timers): `name` says which periodic job is due."""

    name: str
    ts: UtcDatetime = Field(default_factory=now_utc)
