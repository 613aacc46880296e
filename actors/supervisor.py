"""Supervisor: starts the children in dependency order and stops them in reverse.

Done here: ordered start with a readiness ask per child (a child that fails
to start stops the ones already running and fails the whole start), ordered
stop within a deadline (DbWriter drains inside its own on_stop), and a log
line for every child failure it is told about.

It holds the desired public subscription set (built from config; a
`Subscribe`/`Unsubscribe` told to it changes the set first, then WsPublic is
told the new set), so any WsPublic it starts carries exactly that set.

Not done yet (its own issue): restarting failed or stale WebSocket actors
with their desired subscription sets, the OTP restart intensity limit and
escalation to REDUCING/HALTED, and retiring late callbacks of replaced
generations. Until then a failed child stays down and is logged as
`supervisor.child_failed` with `restarted=false`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import pykka

from actors.base import ActorContext, Directory, Role
from infra.bybit.clients import VenueUrls
from infra.config import AppConfig
from infra.logging import get_logger
from messages.commands import Subscribe, Unsubscribe
from messages.control import ChildFailed, Ping
from messages.subscriptions import DesiredSubscriptions


class StartFailed(RuntimeError):
    """A child did not come up; the node must not run half-built."""


@dataclass(frozen=True)
class ChildSpec:
    role: Role
    start: Callable[[ActorContext], pykka.ActorRef[Any]]


class Supervisor(pykka.ThreadingActor):
    use_daemon_thread = True

    def __init__(
        self,
        config: AppConfig,
        directory: Directory,
        children: Sequence[ChildSpec],
        urls: VenueUrls | None = None,
        gateway: Any = None,
    ):
        super().__init__()
        self._config = config
        self._urls = urls
        self._gateway = gateway
        self._directory = directory
        self._specs = tuple(children)
        self._running: list[tuple[Role, pykka.ActorRef[Any]]] = []
        self._ask_timeout = float(config.node.supervisor.ask_timeout_s)
        self._stop_budget = float(config.node.shutdown.graceful_timeout_s)
        # The desired public streams (DATA-010): changed here first, then handed to WsPublic.
        self._desired = DesiredSubscriptions.from_config(config.node.symbols)
        self._log = get_logger("actors.supervisor").bind(role="supervisor")

    def on_start(self) -> None:
        for spec in self._specs:
            ctx = ActorContext(
                config=self._config,
                directory=self._directory,
                supervisor=self.actor_ref,
                generation=0,
                urls=self._urls,
                gateway=self._gateway,
                subscriptions=self._desired,
            )
            try:
                ref = spec.start(ctx)
                ref.ask(Ping(), timeout=self._ask_timeout)
            except Exception as exc:  # any failure to come up aborts the whole start
                self._log.error("supervisor.start_failed", child=spec.role.value, error=repr(exc))
                self._stop_children()
                raise StartFailed(f"{spec.role.value} did not start: {exc!r}") from exc
            self._directory.register(spec.role, ref)
            self._running.append((spec.role, ref))
            self._log.info("supervisor.child_started", child=spec.role.value)

    def on_stop(self) -> None:
        self._stop_children()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Ping):
            return True
        if isinstance(message, ChildFailed):
            self._directory.unregister(Role(message.role))
            self._running = [(r, ref) for r, ref in self._running if r.value != message.role]
            self._log.error(
                "supervisor.child_failed",
                child=message.role,
                generation=message.generation,
                error=message.error,
                restarted=False,
            )
            return None
        if isinstance(message, (Subscribe, Unsubscribe)):
            self._change_subscriptions(message)
            return None
        self._log.warning("actor.unhandled_message", message_type=type(message).__name__)
        return None

    def _change_subscriptions(self, message: Subscribe | Unsubscribe) -> None:
        before = self._desired
        if isinstance(message, Subscribe):
            self._desired = before.subscribe(message)
        else:
            self._desired = before.unsubscribe(message)
        self._log.info(
            "supervisor.subscriptions_changed",
            symbol=message.symbol,
            added=sorted(set(self._desired.topics()) - set(before.topics())),
            removed=sorted(set(before.topics()) - set(self._desired.topics())),
        )
        # No WsPublic running: the next one starts with the new set from its context.
        self._directory.tell(Role.WS_PUBLIC, self._desired)

    def desired_subscriptions(self) -> DesiredSubscriptions:
        return self._desired

    def running_roles(self) -> list[str]:
        return [r.value for r, _ in self._running]

    def _stop_children(self) -> None:
        """Stop in reverse start order; each child gets what is left of the budget."""
        deadline = time.monotonic() + self._stop_budget
        while self._running:
            role, ref = self._running.pop()
            self._directory.unregister(role, ref)
            started = time.monotonic()
            remaining = max(0.1, deadline - started)
            self._log.info("supervisor.child_stopping", child=role.value)
            try:
                ref.stop(block=True, timeout=remaining)
            except pykka.Timeout:
                self._log.error("supervisor.child_stop_timeout", child=role.value, waited_s=round(remaining, 3))
                continue
            self._log.info(
                "supervisor.child_stopped", child=role.value, duration_ms=round((time.monotonic() - started) * 1000, 1)
            )
