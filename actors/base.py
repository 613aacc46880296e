"""What every node actor shares: a role, a generation, typed dispatch, failure reporting.

Pykka facts that shape this (see shared/STYLE.md):
* a handler that raises on a `tell` kills the actor and drops its queued
  tells, so `on_failure` tells the Supervisor, which owns restarts;
* a thread stuck in a handler cannot be killed, so actor threads are daemon
  threads: after the stop deadline the process can still exit;
* asks go downward only and always carry a timeout.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Callable, ClassVar

import pykka

from infra.bybit.clients import VenueUrls
from infra.config import AppConfig
from infra.logging import get_logger
from actors.timers import Repeater
from messages.control import ChildFailed, Ping


class Role(StrEnum):
    STATE_STORE = "state_store"
    DB_WRITER = "db_writer"
    RISK = "risk"
    PANIC = "panic"
    EXECUTOR = "executor"
    EXAMPLE_STRATEGY = "example_strategy"
    WS_PRIVATE = "ws_private"
    WS_PUBLIC = "ws_public"


# Dependency order: a child starts after everything it sends to.
START_ORDER: tuple[Role, ...] = (
    Role.STATE_STORE,
    Role.DB_WRITER,
    Role.RISK,
    Role.PANIC,
    Role.EXECUTOR,
    Role.EXAMPLE_STRATEGY,  # only when config enables it (actors.tree)
    Role.WS_PRIVATE,
    Role.WS_PUBLIC,
)


class Directory:
    """Role -> current ActorRef. Peers look a role up when sending, so a restarted peer is found.

    It also remembers which generations of a role were retired: a replaced
    WebSocket actor may be stuck and never run its on_stop, so its pybit
    callbacks ask here, not the old actor, whether they still count.
    """

    def __init__(self) -> None:
        self._refs: dict[Role, pykka.ActorRef[Any]] = {}
        self._retired_upto: dict[Role, int] = {}
        self._retire_hooks: dict[tuple[Role, int], list[Callable[[], None]]] = {}
        self._lock = threading.Lock()

    def is_retired(self, role: Role, generation: int) -> bool:
        return generation <= self._retired_upto.get(role, -1)

    def on_retire(self, role: Role, generation: int, hook: Callable[[], None]) -> None:
        """Run `hook` (e.g. close the socket) when this generation is retired, even if its actor is stuck."""
        with self._lock:
            if not self.is_retired(role, generation):
                self._retire_hooks.setdefault((role, generation), []).append(hook)
                return
        hook()

    def retire(self, role: Role, generation: int) -> list[Callable[[], None]]:
        """Mark every generation up to `generation` retired; returns the hooks to run (by the caller's rules)."""
        with self._lock:
            self._retired_upto[role] = max(generation, self._retired_upto.get(role, -1))
            hooks = [h for (r, g), hs in list(self._retire_hooks.items()) if r is role and g <= generation for h in hs]
            for key in [k for k in self._retire_hooks if k[0] is role and k[1] <= generation]:
                del self._retire_hooks[key]
        return hooks

    def register(self, role: Role, ref: pykka.ActorRef[Any]) -> None:
        with self._lock:
            self._refs[role] = ref

    def unregister(self, role: Role, ref: pykka.ActorRef[Any] | None = None) -> None:
        with self._lock:
            if ref is None or self._refs.get(role) is ref:
                self._refs.pop(role, None)

    def get(self, role: Role) -> pykka.ActorRef[Any] | None:
        with self._lock:
            return self._refs.get(role)

    def tell(self, role: Role, message: Any) -> bool:
        """Deliver to the role's current actor; False if none is running."""
        ref = self.get(role)
        if ref is None:
            return False
        try:
            ref.tell(message)
        except pykka.ActorDeadError:
            return False
        return True


@dataclass(frozen=True)
class ActorContext:
    """What a child needs from the node: config, peers by role, its supervisor, the venue."""

    config: AppConfig
    directory: Directory
    supervisor: pykka.ActorRef[Any] | None = None
    generation: int = 0
    urls: VenueUrls | None = None
    # The node's one gateway (infra.bybit.Gateway): one rate limiter for every caller.
    gateway: Any = None
    # The public streams the node wants (messages.subscriptions.DesiredSubscriptions), held by
    # the Supervisor: a WsPublic started or restarted with it carries exactly that set.
    subscriptions: Any = None
    # infra.market_reader.MarketReader: prices for Risk and the Executor (stream first, REST fallback).
    market_reader: Any = None


class NodeActor(pykka.ThreadingActor):
    """Base of the node's actors. Subclasses map message types to handlers in `handlers()`."""

    role: ClassVar[Role]
    use_daemon_thread = True

    def __init__(self, ctx: ActorContext):
        super().__init__()
        self._ctx = ctx
        self._log = get_logger(f"actors.{self.role.value}").bind(role=self.role.value, generation=ctx.generation)
        self._handlers: dict[type, Callable[[Any], Any]] = self.handlers()
        self._repeaters: list[Repeater] = []

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {}

    def on_start(self) -> None:
        self._log.info("actor.started")

    def every(self, interval_s: float, make: Callable[[], Any], *, name: str,
              first_after_s: float | None = None) -> Repeater:
        """Tell `make()` to this actor every `interval_s`; stopped with the actor (on_stop or on_failure)."""
        repeater = Repeater(self.actor_ref, make, interval_s, name=name, first_after_s=first_after_s).start()
        self._repeaters.append(repeater)
        return repeater

    def _stop_repeaters(self) -> None:
        for repeater in self._repeaters:
            repeater.stop()

    def on_stop(self) -> None:
        self._stop_repeaters()
        self._log.info("actor.stopped")

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self._stop_repeaters()
        self._log.error("actor.failed", error=repr(exception_value), error_type=getattr(exception_type, "__name__", "?"))
        if self._ctx.supervisor is not None:
            try:
                self._ctx.supervisor.tell(
                    ChildFailed(role=self.role.value, generation=self._ctx.generation, error=repr(exception_value))
                )
            except pykka.ActorDeadError:
                pass

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Ping):
            return True
        handler = self._handlers.get(type(message))
        if handler is None:
            self._log.warning("actor.unhandled_message", message_type=type(message).__name__)
            return None
        return handler(message)
