"""Supervisor: starts the children in dependency order, keeps them alive, stops them in reverse.

Pykka has no supervision, so this actor does what an OTP supervisor does.
It notices three ways that a child is gone or useless:

* the child's `on_failure` tells it `ChildFailed` (a raising tell handler
  stopped the actor);
* a heartbeat: every `check_interval_s` each child gets a `Ping`; one not
  answered within `heartbeat_timeout_s` means a stuck handler (a thread
  that cannot be killed) and a dead ref means a child stopped from outside;
* freshness: the StateStore's health report names streams that delivered
  nothing within their window while the socket stays open (DATA-011).
  Judged on every tick and, when a watched stream's window (or a new
  socket's first window) ends before the next tick, once more at that
  moment (`FreshnessDue`): polling alone would judge a silent socket up to
  a whole `check_interval_s` late, and every second of it is a second of
  trading on stale data or not trading at all.

A replaced child is retired first: its generation is marked in the
`Directory`, so late pybit callbacks of the old socket are dropped (the
routers ask the directory, not the possibly stuck old actor), its retire
hooks (closing its socket) run on a throwaway daemon thread that nobody
waits for, and it is told to stop without waiting. Then `RestartBook`
decides: restart now, restart after a backoff, or stop looping and
escalate to Panic (`SupervisorEscalated`: trading no higher than
`escalate_to`). Children listed as a spec's `dependents` hold state derived
from it and are restarted with it (a new StateStore is empty, so the
sockets that feed it reconnect, re-announce and reseed it).

The WebSocket replacement gets the desired subscription set the
Supervisor holds (DATA-010). A periodic `node.metrics` event carries what
an operator watches.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import pykka

from actors.base import ActorContext, Directory, Role
from actors.supervision import Cause, Escalate, Leave, RestartBook, RestartType
from actors.timers import Repeater, tell_later
from infra.bybit.clients import VenueUrls
from infra.config import AppConfig
from infra.logging import get_logger
from messages.commands import Subscribe, Unsubscribe
from messages.control import (
    ChildFailed,
    NodeStopping,
    Ping,
    RestartDue,
    SocketStatus,
    SupervisorEscalated,
    SupervisorTick,
    TradingState,
)
from messages.queries import GetHealth, GetTradingState, GetWriterStats, HealthReport
from messages.subscriptions import DesiredSubscriptions
from messages.types import Message

# Which socket a stream belongs to, by the StateStore's stream names.
_PUBLIC_PREFIXES = ("tickers.", "kline.")


def stream_socket(stream: str) -> str:
    return "public" if stream.startswith(_PUBLIC_PREFIXES) else "private"


# A one-shot freshness check runs this long after the window ends: the StateStore calls a
# stream stale only once its age is strictly past the window, on its own reading of the clock.
FRESHNESS_MARGIN_S = 0.02


class FreshnessDue(Message):
    """To itself: a watched stream's window ends before the next tick; judge freshness then."""


class StartFailed(RuntimeError):
    """A child did not come up at node start; the node must not run half-built."""


@dataclass(frozen=True)
class ChildSpec:
    role: Role
    start: Callable[[ActorContext], pykka.ActorRef[Any]]
    restart: RestartType = RestartType.PERMANENT
    # Restarted right after this child, because they hold state derived from it.
    dependents: tuple[Role, ...] = ()
    # "public"/"private": replace this child when its socket's streams go stale.
    socket: str | None = None


@dataclass
class _Child:
    ref: pykka.ActorRef[Any]
    generation: int
    started_at: float
    ping: Any = None  # the pending heartbeat future
    ping_sent: float = 0.0


@dataclass
class _Down:
    """A child waiting for its replacement: since when, and why."""

    since: float
    reason: str
    timer: threading.Timer | None = field(default=None, repr=False)


class Supervisor(pykka.ThreadingActor):
    use_daemon_thread = True

    def __init__(
        self,
        config: AppConfig,
        directory: Directory,
        children: Sequence[ChildSpec],
        urls: VenueUrls | None = None,
        gateway: Any = None,
        clock: Callable[[], float] = time.monotonic,
        market_reader: Any = None,
    ):
        super().__init__()
        self._config = config
        self._urls = urls
        self._gateway = gateway
        self._market_reader = market_reader
        self._directory = directory
        self._specs = {spec.role: spec for spec in children}
        self._order = [spec.role for spec in children]
        self._children: dict[Role, _Child] = {}
        self._down: dict[Role, _Down] = {}
        self._generations: dict[Role, int] = {}
        self._clock = clock
        sup = config.node.supervisor
        self._ask_timeout = float(sup.ask_timeout_s)
        self._check_s = float(sup.check_interval_s)
        self._heartbeat_s = float(sup.heartbeat_timeout_s)
        self._stale_after = {"public": float(sup.public_stale_after_s), "private": float(sup.private_stale_after_s)}
        self._escalate_to = TradingState(sup.escalate_to)
        self._book = RestartBook(
            max_restarts=sup.max_restarts,
            window_s=float(sup.restart_window_s),
            backoff_s=float(sup.restart_backoff_s),
            backoff_max_s=float(sup.restart_backoff_max_s),
            clock=clock,
        )
        self._metrics_every = float(config.node.log.metrics_interval_s)
        self._last_metrics = clock()
        self._last_frames: dict[str, int] = {}
        self._stop_budget = float(config.node.shutdown.graceful_timeout_s)
        self._ticker: Repeater | None = None
        self._freshness_timer: threading.Timer | None = None
        self._freshness_at = 0.0
        self._stopping = False
        # The desired public streams (DATA-010): changed here first, then handed to WsPublic;
        # every WsPublic started or restarted gets the current set in its context.
        self._desired = DesiredSubscriptions.from_config(config.node.symbols)
        self._log = get_logger("actors.supervisor").bind(role="supervisor")

    # --- lifecycle --------------------------------------------------------

    def on_start(self) -> None:
        for role in self._order:
            try:
                self._start_child(role)
            except Exception as exc:  # any failure to come up aborts the whole start
                self._log.error("supervisor.start_failed", child=role.value, error=repr(exc), generation=0)
                self._stop_children()
                raise StartFailed(f"{role.value} did not start: {exc!r}") from exc
        self._ticker = Repeater(self.actor_ref, SupervisorTick, self._check_s, name="supervisor-ticks").start()

    def on_stop(self) -> None:
        self._stopping = True
        if self._ticker is not None:
            self._ticker.stop()
        if self._freshness_timer is not None:
            self._freshness_timer.cancel()
        for down in self._down.values():
            if down.timer is not None:
                down.timer.cancel()
        # Before any child stops: Panic halts trading for the rest of the run, and so reads the
        # sockets going down next as the stop they are, not as stale data; the StateStore says
        # that readiness loss at info. Mailboxes are FIFO, so this arrives before any status
        # the stop causes.
        for role in (Role.PANIC, Role.STATE_STORE):
            self._directory.tell(role, NodeStopping())
        self._stop_children()

    # --- messages ---------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        # Nothing here may raise: a raising handler would stop the Supervisor itself.
        try:
            if isinstance(message, Ping):
                return True
            if isinstance(message, ChildFailed):
                self._on_child_failed(message)
            elif isinstance(message, SupervisorTick):
                self._on_tick()
            elif isinstance(message, FreshnessDue):
                self._on_freshness_due()
            elif isinstance(message, RestartDue):
                self._restart_due(Role(message.role), message.reason)
            elif isinstance(message, (Subscribe, Unsubscribe)):
                self._change_subscriptions(message)
            else:
                self._log.warning("actor.unhandled_message", message_type=type(message).__name__)
        except Exception as exc:
            self._log.error("supervisor.error", error=repr(exc), message_type=type(message).__name__)
        return None

    def running_roles(self) -> list[str]:
        return [r.value for r in self._order if r in self._children]

    def generation(self, role: Role) -> int | None:
        child = self._children.get(role)
        return None if child is None else child.generation

    def restarts_in_window(self) -> int:
        return self._book.restarts_in_window()

    def desired_subscriptions(self) -> DesiredSubscriptions:
        return self._desired

    def _change_subscriptions(self, message: Subscribe | Unsubscribe) -> None:
        before = self._desired
        self._desired = before.subscribe(message) if isinstance(message, Subscribe) else before.unsubscribe(message)
        self._log.info(
            "supervisor.subscriptions_changed",
            symbol=message.symbol,
            added=sorted(set(self._desired.topics()) - set(before.topics())),
            removed=sorted(set(before.topics()) - set(self._desired.topics())),
        )
        # No WsPublic running (down, restarting): its replacement starts with the new set.
        self._directory.tell(Role.WS_PUBLIC, self._desired)

    # --- noticing ---------------------------------------------------------

    def _on_child_failed(self, msg: ChildFailed) -> None:
        role = Role(msg.role)
        child = self._children.get(role)
        if child is None or child.generation != msg.generation:
            self._log.info("supervisor.late_failure_ignored", child=msg.role, generation=msg.generation)
            return
        self._replace(role, Cause.FAILED, error=msg.error)

    def _on_tick(self) -> None:
        now = self._clock()
        for role in list(self._children):
            child = self._children.get(role)
            if child is not None:
                self._check_heartbeat(role, child, now)
        health = self._health()
        if health is not None:
            self._check_freshness(health, now)
        if now - self._last_metrics >= self._metrics_every:
            self._last_metrics = now
            self._emit_metrics(health)
        if self._book.escalated and self._book.calm() and not self._down:
            self._book.escalated = False
            self._log.info("supervisor.recovered", scope="node", reason="no restart within the window")
            self._tell_panic(SupervisorEscalated(active=False, state=self._escalate_to, reason="restarts calmed down"))

    def _check_heartbeat(self, role: Role, child: _Child, now: float) -> None:
        if child.ping is not None:
            try:
                child.ping.get(timeout=0)
                child.ping = None
            except pykka.Timeout:
                if now - child.ping_sent > self._heartbeat_s:
                    self._replace(role, Cause.HEARTBEAT_MISSED, waited_s=round(now - child.ping_sent, 3))
                return
            except pykka.ActorDeadError:
                self._replace(role, Cause.STOPPED)
                return
            except Exception:  # the Ping raised inside the child: it is alive and answering
                child.ping = None
        if not child.ref.is_alive():
            self._replace(role, Cause.STOPPED)
            return
        try:
            child.ping = child.ref.ask(Ping(), block=False)
            child.ping_sent = now
        except pykka.ActorDeadError:
            self._replace(role, Cause.STOPPED)

    def _health(self) -> HealthReport | None:
        ref = self._directory.get(Role.STATE_STORE)
        if ref is None:
            return None
        try:
            answer = ref.ask(GetHealth(), timeout=min(self._ask_timeout, self._check_s))
        except Exception:
            return None  # a StateStore that does not answer is the heartbeat's business
        return answer if isinstance(answer, HealthReport) else None

    def _on_freshness_due(self) -> None:
        self._freshness_timer = None
        health = self._health()
        if health is not None:
            self._check_freshness(health, self._clock())

    def _check_freshness(self, health: HealthReport, now: float) -> None:
        self._judge_freshness(health, now)
        self._plan_freshness(health, now)

    def _plan_freshness(self, health: HealthReport, now: float) -> None:
        """A one-shot check when the first watched stream's window ends before the next tick."""
        due = self._next_window_end(health, now)
        if due is None or due >= self._check_s:
            return  # the next tick is on time
        at = now + due
        if self._freshness_timer is not None:
            if self._freshness_at <= at:
                return  # an earlier check is already planned; it plans the next one
            self._freshness_timer.cancel()
        self._freshness_at = at
        self._freshness_timer = tell_later(self.actor_ref, FreshnessDue(), due + FRESHNESS_MARGIN_S)

    def _next_window_end(self, health: HealthReport, now: float) -> float | None:
        """Seconds until some running socket child's watched stream could first be judged stale:
        a fresh stream when its window ends, any stream not before the socket's first window ends."""
        soonest: float | None = None
        for role, child in self._children.items():
            spec = self._specs[role]
            if spec.socket is None:
                continue
            window = self._stale_after[spec.socket]
            first_window_left = child.started_at + window - now
            for name, h in health.streams.items():
                if not h.watched or stream_socket(name) != spec.socket:
                    continue
                left = 0.0 if h.stale or h.age_s is None else window - h.age_s
                left = max(left, first_window_left, 0.0)
                if soonest is None or left < soonest:
                    soonest = left
        return soonest

    def _judge_freshness(self, health: HealthReport, now: float) -> None:
        for role, child in list(self._children.items()):
            spec = self._specs[role]
            if spec.socket is None:
                continue
            window = self._stale_after[spec.socket]
            if now - child.started_at < window:
                continue  # a new socket gets one window to deliver before it is judged
            stale = sorted(s for s, h in health.streams.items() if h.stale and stream_socket(s) == spec.socket)
            if stale:
                ages = {s: health.streams[s].age_s for s in stale}
                self._log.warning("supervisor.stale", child=role.value, generation=child.generation,
                                  streams=stale, ages_s=ages, window_s=window)
                self._replace(role, Cause.STALE, streams=stale)

    # --- replacing --------------------------------------------------------

    def _replace(self, role: Role, cause: Cause, **detail: Any) -> None:
        child = self._children.pop(role, None)
        generation = child.generation if child is not None else self._generations.get(role, 0)
        if child is not None:
            self._retire(role, child)
        if cause is not Cause.STALE:  # stale already has its own event
            self._log.error("supervisor.child_failed", child=role.value, generation=generation,
                            reason=cause.value, **detail)
        # Dependents go down with it and come back right after it (_start_waiting_dependents).
        for dependent in self._specs[role].dependents:
            dep = self._children.pop(dependent, None)
            if dep is not None:
                self._retire(dependent, dep)
                self._log.warning("supervisor.dependent_restart", child=dependent.value, because_of=role.value,
                                  generation=dep.generation)
                self._down[dependent] = _Down(since=self._clock(), reason=f"{role.value} restarted")
        self._decide(role, cause)

    def _decide(self, role: Role, cause: Cause) -> None:
        spec = self._specs[role]
        decision = self._book.decide(role.value, spec.restart, cause)
        down = self._down.setdefault(role, _Down(since=self._clock(), reason=cause.value))
        if isinstance(decision, Leave):
            self._down.pop(role, None)
            self._log.warning("supervisor.not_restarted", child=role.value, reason=decision.why)
            return
        if isinstance(decision, Escalate):
            self._log.error("supervisor.escalated", child=role.value, reason=cause.value,
                            restarts_in_window=decision.restarts_in_window, trading=self._escalate_to.value,
                            retry_in_s=decision.retry_in_s)
            self._tell_panic(SupervisorEscalated(active=True, state=self._escalate_to,
                                                 reason=f"{role.value} {cause.value}: restart limit reached"))
            self._schedule(role, decision.retry_in_s, cause.value, down)
            return
        if decision.delay_s > 0:
            self._schedule(role, decision.delay_s, cause.value, down)
        else:
            self._restart_due(role, cause.value)

    def _schedule(self, role: Role, delay_s: float, reason: str, down: _Down) -> None:
        if down.timer is not None:
            down.timer.cancel()
        down.timer = tell_later(self.actor_ref, RestartDue(role=role.value, reason=reason), delay_s)
        self._log.info("supervisor.restart_scheduled", child=role.value, delay_s=round(delay_s, 3), reason=reason)

    def _restart_due(self, role: Role, reason: str) -> None:
        down = self._down.get(role)
        if down is None or role in self._children or self._stopping:
            return
        try:
            self._start_child(role)
        except Exception as exc:  # e.g. on_start raised: Pykka did not call on_failure
            self._log.error("supervisor.start_failed", child=role.value, generation=self._generations[role],
                            error=repr(exc))
            self._decide(role, Cause.START_FAILED)
            return
        self._down.pop(role, None)
        child = self._children[role]
        self._log.warning("supervisor.restart", child=role.value, generation=child.generation, reason=reason,
                          down_ms=round((self._clock() - down.since) * 1000, 1),
                          restarts_in_window=self._book.restarts_in_window())
        self._start_waiting_dependents(role)

    def _start_waiting_dependents(self, role: Role) -> None:
        for dependent in self._specs[role].dependents:
            if dependent in self._down and dependent not in self._children:
                self._restart_due(dependent, f"{role.value} restarted")

    def _retire(self, role: Role, child: _Child) -> None:
        self._directory.unregister(role, child.ref)
        hooks = self._directory.retire(role, child.generation)
        socket = self._specs[role].socket
        if socket is not None:
            # A socket actor replaced while stuck (or after a raising handler) never runs the
            # on_stop that says its socket is down: said here, or the StateStore keeps calling it
            # up (and the private seam healed) and `ready` open with no socket behind it. Its
            # generation: a successor's later "up" still wins, a late word of this one does not.
            topics = self._desired.topics() if socket == "public" else ()
            self._directory.tell(Role.STATE_STORE, SocketStatus(
                socket=socket, generation=child.generation, connected=False, topics=topics,
                reason=f"{role.value} generation {child.generation} replaced"))
        if hooks:
            # A socket that will not close is abandoned, never waited on: the hooks
            # run on a daemon thread nobody joins.
            threading.Thread(target=_run_hooks, args=(hooks,), name=f"retire-{role.value}-{child.generation}",
                             daemon=True).start()
        try:
            child.ref.stop(block=False)
        except pykka.ActorDeadError:
            pass

    # --- starting and stopping -------------------------------------------

    def _start_child(self, role: Role) -> None:
        spec = self._specs[role]
        generation = self._generations.get(role, -1) + 1
        self._generations[role] = generation
        ctx = ActorContext(
            config=self._config,
            directory=self._directory,
            supervisor=self.actor_ref,
            generation=generation,
            urls=self._urls,
            gateway=self._gateway,
            subscriptions=self._desired,
            market_reader=self._market_reader,
        )
        ref = spec.start(ctx)
        try:
            ref.ask(Ping(), timeout=self._ask_timeout)
        except BaseException:
            self._directory.retire(role, generation)
            try:
                ref.stop(block=False)
            except pykka.ActorDeadError:
                pass
            raise
        self._directory.register(role, ref)
        self._children[role] = _Child(ref=ref, generation=generation, started_at=self._clock())
        self._log.info("supervisor.child_started", child=role.value, generation=generation)

    def _stop_children(self) -> None:
        """Stop in reverse start order; each child gets what is left of the budget."""
        deadline = time.monotonic() + self._stop_budget
        for role in reversed(self._order):
            child = self._children.pop(role, None)
            if child is None:
                continue
            self._directory.unregister(role, child.ref)
            started = time.monotonic()
            remaining = max(0.1, deadline - started)
            self._log.info("supervisor.child_stopping", child=role.value)
            try:
                child.ref.stop(block=True, timeout=remaining)
            except pykka.Timeout:
                self._log.error("supervisor.child_stop_timeout", child=role.value, waited_s=round(remaining, 3))
                continue
            self._log.info(
                "supervisor.child_stopped", child=role.value, duration_ms=round((time.monotonic() - started) * 1000, 1)
            )

    # --- telling the operator --------------------------------------------

    def _tell_panic(self, message: Any) -> None:
        if not self._directory.tell(Role.PANIC, message):
            self._log.error("supervisor.panic_unreachable", message_type=type(message).__name__)

    def _ask(self, role: Role, query: Any) -> Any:
        ref = self._directory.get(role)
        if ref is None:
            return None
        try:
            return ref.ask(query, timeout=min(self._ask_timeout, 1.0))
        except Exception:
            return None

    def _emit_metrics(self, health: HealthReport | None) -> None:
        streams: dict[str, dict[str, Any]] = {}
        if health is not None:
            for name, h in sorted(health.streams.items()):
                per_s = (h.frames - self._last_frames.get(name, 0)) / self._metrics_every
                self._last_frames[name] = h.frames
                streams[name] = {"frames_per_s": round(per_s, 2), "age_s": None if h.age_s is None else round(h.age_s, 3),
                                 "stale": h.stale, "rejected": h.rejected}
        mailboxes = {r.value: c.ref.actor_inbox.qsize() for r, c in self._children.items()}
        writer = self._ask(Role.DB_WRITER, GetWriterStats())
        trading = self._ask(Role.PANIC, GetTradingState())
        self._log.info(
            "node.metrics",
            ready=None if health is None else health.ready,
            streams=streams,
            mailboxes=mailboxes,
            db_writer=None if writer is None or not hasattr(writer, "pending_bars") else {
                "pending_bars": writer.pending_bars, "last_flush_at": writer.last_flush_at,
                "failing_since": writer.failing_since},
            trading_state=getattr(getattr(trading, "state", None), "value", None),  # the name, not the enum repr
            restarts_in_window=self._book.restarts_in_window(),
            children_down=sorted(r.value for r in self._down),
        )


def _run_hooks(hooks: list[Callable[[], None]]) -> None:
    for hook in hooks:
        try:
            hook()
        except Exception:
            pass  # an old socket that fails to close is abandoned either way
