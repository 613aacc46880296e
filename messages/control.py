"""Control messages: liveness, failures and the trading state."""

from __future__ import annotations

from enum import StrEnum

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
