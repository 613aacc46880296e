"""Coalesced hand-off of market messages from a socket thread to the current actor of a role.

Why not one `tell` per frame: under a flood (thousands of ticker deltas a
second) every tell is a pykka envelope, a queue put and get, and a wake of
the receiving thread, which then trades the interpreter lock with pybit's
reader thread frame by frame; measured, that hand-off cost more than parsing
and merging the frame.

How: the producer (pybit's thread, through the router) appends each parsed,
immutable message to a FIFO and tells the recipient one `MarketDataPending`
only when no drain is outstanding, and, when its socket can say so, only at
the end of a burst (no next frame already waiting: `wake()`) or every
`MAX_BATCH` messages: frames that are already on the wire behind this one
are read at once anyway, so waking the consumer for each of them only makes
it fight the reader for the interpreter lock. The recipient `take()`s
batches until a take finds nothing (its budget: `StateStore._on_market_pending`);
only that empty take ends the drain, so the next waking put tells anew.

No frame is stranded: `put` (append + "is a drain outstanding?") and `take`
(empty the FIFO + "was it empty? then none is outstanding") each run under
one lock, so a frame appended just as a drain finishes is either in that
drain's last batch or finds no drain outstanding and tells a new one.

A restart of the recipient (a new ActorRef in the Directory) is a new
addressee: the outstanding drain belonged to the old actor, so the next
`put` tells the new one, which takes whatever is pending, including what
the old actor never took (pykka would have dropped those with the dead
actor's mailbox; here they still reach state, in order).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import pykka

from actors.base import Directory, Role
from messages.market import MarketDataPending


class Inbox:
    """FIFO of messages for `role`'s current actor, handed over in batches (see module doc)."""

    def __init__(self, directory: Directory, role: Role):
        self._directory = directory
        self._role = role
        self._items: deque[Any] = deque()
        self._lock = threading.Lock()
        self._told: Any = None  # the ActorRef holding an outstanding drain, None if none is
        self.dropped = 0  # messages dropped because their addressee was dead when told
        self._drain = MarketDataPending(inbox=self)  # immutable: one instance serves every wake

    def put(self, message: Any, wake: bool = True) -> bool:
        """Queue `message` for the role's actor; False (and not queued) if no actor is running
        (or the running one is dead: then what was queued for it is dropped too, see `dropped`).

        `wake=False` only queues it: the producer promises a `wake()` (or a waking put) soon,
        e.g. at the end of the burst of frames it is reading.
        """
        ref = self._directory.get(self._role)
        if ref is None:
            return False
        with self._lock:
            self._items.append(message)
            if not wake or self._told is ref:
                return True  # the outstanding drain (or the promised wake) will take it
            self._told = ref
        return self._tell(ref, message)

    def needs_wake(self) -> bool:
        """Something is queued and no drain for the current actor is outstanding (a hint, read
        without the lock: the socket's thread calls it right after its own put, so a drain that
        ends meanwhile either takes that put's item or leaves `_told` cleared for this read; the
        actor's own puts, healed bars, always `wake()` under the lock)."""
        if not self._items:
            return False
        told = self._told
        return told is None or told is not self._directory.get(self._role)

    def wake(self) -> None:
        """Tell a drain if anything is pending and none is outstanding."""
        ref = self._directory.get(self._role)
        if ref is None:
            return
        with self._lock:
            if not self._items or self._told is ref:
                return
            self._told = ref
        self._tell(ref, None)

    def _tell(self, ref: Any, message: Any) -> bool:
        try:
            ref.tell(self._drain)
        except pykka.ActorDeadError:
            with self._lock:
                # The addressee is dead and not yet replaced: what waited for it is dropped and
                # counted, as pykka drops a dead actor's mailbox; nothing piles up meanwhile.
                self.dropped += len(self._items)
                self._items.clear()
                if self._told is ref:
                    self._told = None
            return False
        return True

    def take(self) -> tuple[Any, ...]:
        """Everything pending, oldest first. The drain stays outstanding until a `take` finds
        nothing: the recipient takes until empty (or tells itself the drain again), and only
        then does the next `put` tell a new one."""
        with self._lock:
            items = tuple(self._items)
            self._items.clear()
            if not items:
                self._told = None
        return items

    def __len__(self) -> int:
        return len(self._items)
