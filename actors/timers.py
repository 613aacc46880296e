"""Timers for actors. Pykka has none: a daemon thread that `tell`s is the whole mechanism.

A timer never runs actor code itself; it only puts a message in the
actor's mailbox, so the handler still runs on the actor's own thread.
A tell to an actor that stopped meanwhile is dropped quietly.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import pykka


def _tell(ref: pykka.ActorRef[Any], message: Any) -> None:
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        pass


def tell_later(ref: pykka.ActorRef[Any], message: Any, delay_s: float) -> threading.Timer:
    """Tell `message` to `ref` after `delay_s`; cancel() the returned timer to take it back."""
    timer = threading.Timer(max(0.0, delay_s), _tell, args=(ref, message))
    timer.daemon = True
    timer.start()
    return timer


class Repeater:
    """Tells `make()` to `ref` every `interval_s` until `stop()`.

    `gate` (optional) is asked before each tell; a tick is skipped while it
    says False, so a slow handler never piles ticks up in the mailbox.
    """

    def __init__(self, ref: pykka.ActorRef[Any], make: Callable[[], Any], interval_s: float,
                 gate: Callable[[], bool] | None = None, name: str = "repeater",
                 first_after_s: float | None = None):
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._ref = ref
        self._make = make
        self._interval_s = interval_s
        self._first_s = interval_s if first_after_s is None else first_after_s
        self._gate = gate
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "Repeater":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        wait = self._first_s
        while not self._stopped.wait(wait):
            wait = self._interval_s
            if self._gate is not None and not self._gate():
                continue
            try:
                self._ref.tell(self._make())
            except pykka.ActorDeadError:
                return
