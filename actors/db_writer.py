"""DbWriter: the only writer of the DuckDB file; its mailbox decouples bar
persistence from WebSocket callbacks.

Not built yet: batching, the store and draining on stop are the work of the
DuckDB history issue. Until then this actor accepts closed bars and counts
them, and says so at stop (`db.not_persisted`) so nobody mistakes it for
storage.
"""

from __future__ import annotations

from typing import Any, Callable

from actors.base import NodeActor, Role
from messages.commands import Flush
from messages.market import ClosedBar


class DbWriter(NodeActor):
    role = Role.DB_WRITER

    def __init__(self, ctx):
        super().__init__(ctx)
        self._received = 0

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {ClosedBar: self._on_bar, Flush: lambda _: None}

    def _on_bar(self, bar: ClosedBar) -> None:
        self._received += 1

    def on_stop(self) -> None:
        if self._received:
            self._log.warning("db.not_persisted", bars=self._received)
        super().on_stop()
