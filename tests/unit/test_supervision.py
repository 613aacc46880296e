"""OTP-style restart decisions: intensity, backoff, escalation, restart types."""

from __future__ import annotations

import pytest

from actors.supervision import Cause, Escalate, Leave, Restart, RestartBook, RestartType


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock():
    return Clock()


def book(clock, **kw) -> RestartBook:
    args = {"max_restarts": 3, "window_s": 60.0, "backoff_s": 1.0, "backoff_max_s": 8.0, **kw}
    return RestartBook(clock=clock, **args)


def test_first_restart_is_immediate_then_backoff_doubles_up_to_the_cap(clock):
    b = book(clock, max_restarts=10)
    delays = [b.decide("ws_public", RestartType.PERMANENT, Cause.FAILED).delay_s for _ in range(6)]
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0, 8.0]


def test_backoff_is_per_child(clock):
    b = book(clock, max_restarts=10)
    b.decide("ws_public", RestartType.PERMANENT, Cause.FAILED)
    b.decide("ws_public", RestartType.PERMANENT, Cause.FAILED)
    first_private = b.decide("ws_private", RestartType.PERMANENT, Cause.STALE)
    assert isinstance(first_private, Restart) and first_private.delay_s == 0.0 and first_private.attempt == 1
    assert first_private.restarts_in_window == 3


def test_past_the_intensity_limit_it_escalates_instead_of_looping(clock):
    b = book(clock)
    decisions = [b.decide("ws_public", RestartType.PERMANENT, Cause.HEARTBEAT_MISSED) for _ in range(5)]
    assert [type(d) for d in decisions] == [Restart, Restart, Restart, Escalate, Escalate]
    assert decisions[3].restarts_in_window == 3 and decisions[3].retry_in_s == 8.0
    assert b.escalated


def test_the_window_slides_so_old_restarts_stop_counting(clock):
    b = book(clock)
    for _ in range(3):
        assert isinstance(b.decide("db_writer", RestartType.PERMANENT, Cause.FAILED), Restart)
    clock.t += 60.5
    assert b.calm()
    again = b.decide("db_writer", RestartType.PERMANENT, Cause.FAILED)
    assert isinstance(again, Restart) and again.attempt == 1 and again.delay_s == 0.0


def test_restart_types(clock):
    b = book(clock)
    assert isinstance(b.decide("x", RestartType.TEMPORARY, Cause.FAILED), Leave)
    assert isinstance(b.decide("x", RestartType.TRANSIENT, Cause.STOPPED), Leave)
    assert isinstance(b.decide("x", RestartType.TRANSIENT, Cause.FAILED), Restart)
    assert isinstance(b.decide("x", RestartType.PERMANENT, Cause.STOPPED), Restart)
    assert b.restarts_in_window() == 2  # a Leave is not a restart


def test_failed_starts_of_a_replacement_back_off_and_count(clock):
    b = book(clock, max_restarts=4)
    got = [b.decide("ws_private", RestartType.PERMANENT, c) for c in (Cause.FAILED, Cause.START_FAILED, Cause.START_FAILED)]
    assert [d.delay_s for d in got] == [0.0, 1.0, 2.0]
