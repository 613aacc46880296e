"""A periodic `tell`: Pykka has no timers, so a small daemon thread nudges an actor's mailbox.

The work itself runs on the actor's thread when the `Tick` arrives; the
timer only tells. A dead actor ends the timer.
"""

from __future__ import annotations

import threading
from typing import Any

import pykka

from messages.control import Tick


class PeriodicTell:
    def __init__(self, ref: pykka.ActorRef[Any], name: str, interval_s: float, *, first_after_s: float | None = None):
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._ref = ref
        self._name = name
        self._interval = interval_s
        self._first = interval_s if first_after_s is None else first_after_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"timer-{name}", daemon=True)

    def start(self) -> "PeriodicTell":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=2)

    def _run(self) -> None:
        wait = self._first
        while not self._stop.wait(wait):
            try:
                self._ref.tell(Tick(name=self._name))
            except pykka.ActorDeadError:
                return
            wait = self._interval
