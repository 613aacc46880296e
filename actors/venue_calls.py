"""An actor's calls to the venue, made on a thread of their own, each answer told back to the actor.

A REST call can take the whole read timeout (`exchange.rest_timeout_s`), and an
order create its lookup window on top of that. Made on the actor's own thread, it
holds every message queued behind it for that long. For the Executor, that could
mean a FLAT signal waiting on an unrelated entry's create while the venue is slow,
which is exactly when getting out matters. The actor hands the call here, keeps
its mailbox moving, and gets the outcome as a `VenueAnswer` message. It matches the
answer to its own continuation by `token`.

Calls run one at a time, in the order they were handed over, so the venue sees
them in the order the actor decided them.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable

import pykka


@dataclass(frozen=True)
class VenueAnswer:
    """The outcome of one call: its `value`, or the `error` it raised (then `value` is None)."""

    token: str
    value: Any = None
    error: BaseException | None = None


class VenueCalls:
    """One daemon thread per actor; `submit` never blocks, and `stop` never waits for the venue."""

    def __init__(self, ref: pykka.ActorRef[Any], name: str):
        self._ref = ref
        self._calls: queue.SimpleQueue[tuple[str, Callable[[], Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, token: str, call: Callable[[], Any]) -> None:
        self._calls.put((token, call))

    def stop(self, wait_s: float = 0.0) -> None:
        """Take no more calls. One on the wire is not interrupted: its answer goes to a stopped
        actor and is dropped (the caller says in its own log what it leaves behind)."""
        self._calls.put(None)
        if wait_s > 0:
            self._thread.join(wait_s)

    def _run(self) -> None:
        while (item := self._calls.get()) is not None:
            token, call = item
            try:
                answer = VenueAnswer(token, call())
            except BaseException as exc:  # any outcome goes back to the actor, which decides
                answer = VenueAnswer(token, error=exc)
            try:
                self._ref.tell(answer)
            except pykka.ActorDeadError:
                return
