"""Supervision with mocked children: failure, missed heartbeat, staleness, backoff, escalation."""

from __future__ import annotations

import threading
import time

import pykka
import pytest

from actors.base import Directory, NodeActor, Role
from actors.supervisor import ChildSpec, Supervisor
from infra.config import load_config
from messages.control import Ping, SupervisorEscalated, TradingState
from messages.queries import GetHealth, HealthReport, StreamHealth
from tests.helpers import wait_until

FAST = """\
supervisor:
  ask_timeout_s: 2
  check_interval_s: 0.05
  heartbeat_timeout_s: 0.4
  public_stale_after_s: 0.2
  private_stale_after_s: 0.2
  max_restarts: 3
  restart_window_s: 30
  restart_backoff_s: 0.05
  restart_backoff_max_s: 0.4
  escalate_to: HALTED
shutdown:
  graceful_timeout_s: 3
"""


@pytest.fixture
def app(write_config):
    return load_config(write_config(FAST))


class Hang:
    """Sent to a child to make its handler block until released (a stuck thread)."""


class Explode:
    pass


class Starts:
    """How often each role's on_start ran, and a switch to make the next ones fail."""

    def __init__(self):
        self.counts: dict[str, int] = {}
        self.fail_next: dict[str, int] = {}
        self.lock = threading.Lock()

    def started(self, role: str) -> None:
        with self.lock:
            self.counts[role] = self.counts.get(role, 0) + 1
            if self.fail_next.get(role, 0) > 0:
                self.fail_next[role] -= 1
                raise RuntimeError(f"{role} cannot start now")


def child(role: Role, starts: Starts, release: threading.Event, health: list | None = None,
          received: list | None = None, socket: str | None = None):
    class Child(NodeActor):
        def on_start(self):
            starts.started(role.value)
            super().on_start()

        def handlers(self):
            return {Hang: lambda _: release.wait(30), Explode: self._explode,
                    GetHealth: lambda _: health[0] if health else None,
                    SupervisorEscalated: lambda m: received.append(m) if received is not None else None}

        def _explode(self, _):
            raise RuntimeError("boom")

    Child.role = role
    return ChildSpec(role=role, start=Child.start, socket=socket)


def report(stale_public: bool) -> HealthReport:
    stream = StreamHealth(connected=True, age_s=9.0 if stale_public else 0.01, stale=stale_public, frames=5, rejected=0)
    return HealthReport(ready=not stale_public, reasons=(), streams={"tickers.BTCUSDT": stream},
                        wallet_seeded=True, positions_seeded=True)


def started(app, directory, specs):
    sup = Supervisor.start(app, directory, specs)
    assert sup.ask(Ping(), timeout=10) is True  # on_start (every child up) has run
    return sup


@pytest.fixture
def release():
    event = threading.Event()
    yield event
    event.set()  # let stuck threads end


def test_a_stuck_child_misses_its_heartbeat_and_is_replaced(app, events, release):
    starts, directory = Starts(), Directory()
    sup = started(app, directory, [child(Role.RISK, starts, release)])
    old = directory.get(Role.RISK)
    old.tell(Hang())
    wait_until(lambda: directory.get(Role.RISK) not in (None, old), timeout=10, what="replacement of a stuck child")
    assert directory.get(Role.RISK).ask(Ping(), timeout=2) is True
    failed = [e for e in events() if e["event"] == "supervisor.child_failed"]
    assert failed and failed[0]["reason"] == "heartbeat_missed" and failed[0]["generation"] == 0
    assert directory.is_retired(Role.RISK, 0)
    sup.stop(block=True, timeout=10)


def test_a_child_stopped_from_outside_is_noticed_and_replaced(app, events, release):
    starts, directory = Starts(), Directory()
    sup = started(app, directory, [child(Role.EXECUTOR, starts, release)])
    old = directory.get(Role.EXECUTOR)
    old.stop(block=True)
    wait_until(lambda: starts.counts.get("executor") == 2, timeout=10, what="a second start")
    assert [e["reason"] for e in events() if e["event"] == "supervisor.child_failed"] == ["stopped"]
    sup.stop(block=True, timeout=10)


def test_stale_streams_replace_the_socket_actor_and_retire_its_generation(app, events, release):
    starts, directory = Starts(), Directory()
    health = [report(stale_public=False)]
    closed = threading.Event()
    sup = started(app, directory, [
        child(Role.STATE_STORE, starts, release, health=health),
        child(Role.WS_PUBLIC, starts, release, socket="public"),
    ])
    directory.on_retire(Role.WS_PUBLIC, 0, closed.set)  # what a socket actor registers: close my socket
    health[0] = report(stale_public=True)
    wait_until(closed.is_set, timeout=10, what="the old socket's retire hook")
    health[0] = report(stale_public=False)
    wait_until(lambda: starts.counts.get("ws_public") == 2, timeout=10, what="the replacement")
    assert directory.is_retired(Role.WS_PUBLIC, 0)
    stale = [e for e in events() if e["event"] == "supervisor.stale"]
    assert stale and stale[0]["streams"] == ["tickers.BTCUSDT"] and stale[0]["child"] == "ws_public"
    assert starts.counts["state_store"] == 1  # only the silent socket's actor was replaced
    sup.stop(block=True, timeout=10)


def test_a_failing_replacement_start_is_retried_with_backoff(app, events, release):
    starts, directory = Starts(), Directory()
    sup = started(app, directory, [child(Role.DB_WRITER, starts, release)])
    starts.fail_next["db_writer"] = 2
    directory.get(Role.DB_WRITER).tell(Explode())
    wait_until(lambda: directory.get(Role.DB_WRITER) is not None and starts.counts["db_writer"] == 4,
               timeout=10, what="the third replacement attempt to come up")
    log = events()
    assert [e["event"] for e in log if e["event"].startswith("supervisor.start_failed")] == ["supervisor.start_failed"] * 2
    delays = [e["delay_s"] for e in log if e["event"] == "supervisor.restart_scheduled"]
    assert delays == [0.05, 0.1]  # doubling from restart_backoff_s
    restart = [e for e in log if e["event"] == "supervisor.restart"]
    assert restart and restart[-1]["generation"] == 3
    sup.stop(block=True, timeout=10)


def test_past_the_intensity_limit_it_escalates_to_panic_instead_of_looping(app, events, release):
    starts, directory = Starts(), Directory()
    received: list = []
    sup = started(app, directory, [
        child(Role.PANIC, starts, release, received=received),
        child(Role.WS_PRIVATE, starts, release),
    ])
    for _ in range(4):
        current = directory.get(Role.WS_PRIVATE)
        current.tell(Explode())
        wait_until(lambda: directory.get(Role.WS_PRIVATE) not in (None, current) or any(
            e["event"] == "supervisor.escalated" for e in events()), timeout=10, what="restart or escalation")
    escalated = [e for e in events() if e["event"] == "supervisor.escalated"]
    assert len(escalated) == 1 and escalated[0]["restarts_in_window"] == 3 and escalated[0]["trading"] == "HALTED"
    wait_until(lambda: received, timeout=5, what="Panic told")
    assert received[0].active and received[0].state is TradingState.HALTED
    # Escalated, the child is still retried, but only at the slow pace.
    wait_until(lambda: directory.get(Role.WS_PRIVATE) is not None, timeout=5, what="the slow retry")
    assert starts.counts["ws_private"] == 5
    sup.stop(block=True, timeout=10)


def test_a_late_failure_of_a_retired_generation_is_ignored(app, events, release):
    from messages.control import ChildFailed

    starts, directory = Starts(), Directory()
    sup = started(app, directory, [child(Role.RISK, starts, release)])
    sup.tell(ChildFailed(role="risk", generation=7, error="from an old incarnation"))
    wait_until(lambda: any(e["event"] == "supervisor.late_failure_ignored" for e in events()), what="ignored")
    assert starts.counts["risk"] == 1
    sup.stop(block=True, timeout=10)
    assert pykka.ActorRegistry.get_all() == []


def test_a_stream_is_judged_when_its_window_ends_not_at_the_next_tick(write_config, events, release):
    # Ticks every 3 s, a 0.3 s window: polling alone would judge the silence up to 3 s late.
    app = load_config(write_config(FAST.replace("check_interval_s: 0.05", "check_interval_s: 3")
                                   .replace("public_stale_after_s: 0.2", "public_stale_after_s: 0.3")))
    lock = threading.Lock()
    feed = {"on": True, "last": 0.0, "asks": 0, "pings": 0}

    def health(_):
        with lock:
            now = time.monotonic()
            feed["asks"] += 1
            if feed["on"]:
                feed["last"] = now  # frames keep arriving
            age = now - feed["last"]
        stream = StreamHealth(connected=True, age_s=age, stale=age > 0.3, frames=1, rejected=0)
        return HealthReport(ready=age <= 0.3, reasons=(), streams={"tickers.BTCUSDT": stream},
                            wallet_seeded=True, positions_seeded=True)

    class Store(NodeActor):
        role = Role.STATE_STORE

        def handlers(self):
            return {GetHealth: health}

        def on_receive(self, message):
            if isinstance(message, Ping):
                with lock:
                    feed["pings"] += 1  # one at its start, then one per tick
            return super().on_receive(message)

    starts, directory = Starts(), Directory()
    closed = threading.Event()
    sup = started(app, directory, [
        ChildSpec(role=Role.STATE_STORE, start=Store.start),
        child(Role.WS_PUBLIC, starts, release, socket="public"),
    ])
    directory.on_retire(Role.WS_PUBLIC, 0, closed.set)
    wait_until(lambda: feed["asks"] >= 1, timeout=10, what="the first tick's health check")
    with lock:
        feed["on"] = False  # the socket goes silent
    wait_until(closed.is_set, timeout=10, what="the silent socket replaced")
    with lock:
        assert feed["pings"] == 2  # still before the second tick
    stale = [e for e in events() if e["event"] == "supervisor.stale"]
    assert len(stale) == 1 and 0.3 < stale[0]["ages_s"]["tickers.BTCUSDT"] < 1.5
    # The replacement hears nothing either: judged when its own first window ends, again
    # before the next tick.
    wait_until(lambda: directory.is_retired(Role.WS_PUBLIC, 1), timeout=10, what="the silent replacement replaced")
    with lock:
        assert feed["pings"] == 2
        assert feed["asks"] <= 5  # one check per window end, no busy re-checking in between
    stale = [e for e in events() if e["event"] == "supervisor.stale"]
    assert [e["generation"] for e in stale] == [0, 1]
    sup.stop(block=True, timeout=10)


def test_a_socket_that_will_not_close_is_abandoned_not_waited_on(app, events, release):
    starts, directory = Starts(), Directory()
    health = [report(stale_public=False)]
    closing = threading.Event()

    def close_forever():  # what closing a socket whose peer never answers looks like
        closing.set()
        release.wait(30)

    sup = started(app, directory, [
        child(Role.STATE_STORE, starts, release, health=health),
        child(Role.WS_PUBLIC, starts, release, socket="public"),
    ])
    directory.on_retire(Role.WS_PUBLIC, 0, close_forever)
    health[0] = report(stale_public=True)
    wait_until(closing.is_set, timeout=10, what="the old socket's close to begin")
    health[0] = report(stale_public=False)
    # The replacement comes up and the Supervisor keeps answering while the close still hangs.
    # (on_start runs before the Supervisor registers the child: wait for both)
    replacement = wait_until(lambda: starts.counts.get("ws_public") == 2 and directory.get(Role.WS_PUBLIC),
                             timeout=10, what="the replacement registered")
    assert not release.is_set() and replacement.ask(Ping(), timeout=2) is True
    assert sup.ask(Ping(), timeout=2) is True
    sup.stop(block=True, timeout=10)


def test_a_replaced_socket_actor_leaves_its_socket_down_in_the_state_not_up(write_config, events, release):
    """A WebSocket actor replaced while stuck (or after its handler raised) never runs its on_stop,
    the one place that tells the StateStore its socket is down. The StateStore then went on
    calling the private socket up and its seam healed, so `ready` (the trading gate) stayed
    open with no private socket at all: until the replacement connected, or for the whole
    staleness window (60 s by default) if it could not."""
    from actors.state_store import StateStore
    from messages.account import AccountReseed, Position
    from messages.control import SocketStatus
    from tests.trading_fakes import wallet

    app = load_config(write_config(FAST.replace("private_stale_after_s: 0.2", "private_stale_after_s: 30")))
    starts, directory = Starts(), Directory()

    class PrivateSocketActor(NodeActor):
        role = Role.WS_PRIVATE

        def on_start(self):
            starts.started("ws_private")
            super().on_start()
            if self._ctx.generation == 0:  # only the first one ever connects
                self._ctx.directory.tell(Role.STATE_STORE, SocketStatus(
                    socket="private", generation=0, connected=True, topics=("order",)))

        def handlers(self):
            return {Hang: lambda _: release.wait(30)}

    sup = started(app, directory, [ChildSpec(role=Role.STATE_STORE, start=StateStore.start),
                                   ChildSpec(role=Role.WS_PRIVATE, start=PrivateSocketActor.start, socket="private")])
    store = directory.get(Role.STATE_STORE)
    from datetime import timedelta
    from decimal import Decimal

    from messages.types import now_utc
    store.tell(AccountReseed(wallet=wallet(), positions=(Position(symbol="BTCUSDT", size=Decimal(0)),),
                             open_orders=(), executions=(), symbols_checked=("BTCUSDT",),
                             requested_at=now_utc() + timedelta(seconds=1), generation=0))
    wait_until(lambda: store.ask(GetHealth(), timeout=2).streams["private"].connected, timeout=10,
               what="the private socket reported up")
    old = directory.get(Role.WS_PRIVATE)
    old.tell(Hang())
    wait_until(lambda: directory.is_retired(Role.WS_PRIVATE, 0), timeout=10, what="the stuck socket actor retired")
    wait_until(lambda: starts.counts.get("ws_private") == 2, timeout=10, what="the replacement")
    health = store.ask(GetHealth(), timeout=2)
    assert health.streams["private"].connected is False
    assert not health.private_seam_healed and not health.ready
    assert any(r.startswith("private socket down") for r in health.reasons)
    sup.stop(block=True, timeout=10)
