"""WsPublic actor and its frame router.

WsPublic owns the public pybit WebSocket: ticker and kline subscriptions,
parsing frames into messages told to the StateStore (and closed bars to the
DbWriter).

`PublicFrameRouter` is what pybit's callbacks call, on pybit's thread. It
only parses and tells: it never blocks, never asks, never touches DuckDB,
and never lets an exception escape (one escaping exception closes pybit's
socket for good, REFERENCE.md 5.2). Once its generation is retired (the
socket was replaced), late frames from the old socket are counted and
dropped, never mixed into state.

Not built yet: the actor does not open the socket or manage subscriptions;
that is completed by the WebSocket/Supervisor work. It only takes part in
the node's start/stop order.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from actors.base import Directory, NodeActor, Role
from infra.logging import get_logger
from messages import MalformedPayload
from messages.market import Kline, Ticker


class PublicFrameRouter:
    def __init__(self, directory: Directory, generation: int):
        self._directory = directory
        self.generation = generation
        self.retired = False
        self.counts = {"frames": 0, "rejected": 0, "late": 0, "undelivered": 0, "errors": 0}
        self._log = get_logger("actors.ws_public").bind(role=Role.WS_PUBLIC.value, generation=generation)

    def on_kline(self, frame: Mapping[str, Any]) -> None:
        self._route(frame, self._klines)

    def on_ticker(self, frame: Mapping[str, Any]) -> None:
        self._route(frame, self._ticker)

    def _route(self, frame: Mapping[str, Any], handle: Callable[[Mapping[str, Any]], None]) -> None:
        try:
            if self.retired:
                self.counts["late"] += 1
                return
            self.counts["frames"] += 1
            handle(frame)
        except MalformedPayload as exc:
            self.counts["rejected"] += 1
            self._log.warning("ws.frame_rejected", what=exc.what, reasons=exc.reasons)
        except Exception as exc:  # never raise into pybit: it would close the socket for good
            self.counts["errors"] += 1
            self._log.error("ws.callback_error", error=repr(exc))

    def _klines(self, frame: Mapping[str, Any]) -> None:
        for kline in Kline.from_bybit(frame):
            self._tell(Role.STATE_STORE, kline)
            if kline.confirm:
                self._tell(Role.DB_WRITER, kline.closed_bar())

    def _ticker(self, frame: Mapping[str, Any]) -> None:
        self._tell(Role.STATE_STORE, Ticker.from_bybit(frame))

    def _tell(self, role: Role, message: Any) -> None:
        if not self._directory.tell(role, message):
            self.counts["undelivered"] += 1
            self._log.error("ws.undeliverable", to=role.value, message_type=type(message).__name__)


class WsPublic(NodeActor):
    role = Role.WS_PUBLIC
