"""Opening orders on the wire, and the switch a panic uses to stop new ones while it runs.

A panic halts trading by telling the Executor, but a signal already past its
checks may be sending its entry at that moment: the panic's reads can then
show the account flat while that entry is still on the wire, and it opens a
position after "flat" was reported. So the gateway counts every opening
(non reduce-only) create in flight; while a panic runs, new ones are refused
before anything is sent, and the panic waits for those in flight before it
verifies the account.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

from infra.bybit.errors import OrderRefused


class EntryGate:
    """Shared by every lane view of one gateway; thread-safe."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._in_flight: list[tuple[str, str]] = []  # (orderLinkId, symbol); a re-send may be there twice
        self._halts: list[str] = []  # the reasons of the panics running now

    def admit(self, symbol: str, order_link_id: str) -> None:
        """Before one opening create: OrderRefused("entries_halted") while a panic runs; else call `done` after it."""
        with self._cond:
            if self._halts:
                raise OrderRefused("entries_halted", f"{symbol}: no opening order while a panic runs ({self._halts[0]})")
            self._in_flight.append((order_link_id, symbol))

    def done(self, order_link_id: str) -> None:
        with self._cond:
            for i, (link, _symbol) in enumerate(self._in_flight):
                if link == order_link_id:
                    del self._in_flight[i]
                    break
            self._cond.notify_all()

    @contextmanager
    def halted(self, reason: str) -> Iterator[None]:
        """No new opening order while inside; after it the trading state keeps entries out."""
        with self._cond:
            self._halts.append(reason)
        try:
            yield
        finally:
            with self._cond:
                self._halts.remove(reason)

    def settle(self, timeout_s: float) -> tuple[set[str], bool]:
        """Wait until no opening create is in flight: (the symbols that were, whether they all ended in time)."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        symbols: set[str] = set()
        with self._cond:
            while self._in_flight:
                symbols |= {symbol for _link, symbol in self._in_flight}
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return symbols, False
                self._cond.wait(remaining)
            return symbols, True
