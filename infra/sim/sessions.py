"""The WebSocket sessions: who is connected, what each subscribed to, and the ops they send.

Public topics are the market's (tickers.*, kline.*); private topics are the
account's, reachable only after `auth`. A new subscription and a private
connection going away are handed to the owner's callbacks: the first frame
of a market topic and disconnect-cancel-all are not the sessions' business.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Callable

from infra.sim.clock import Clock
from infra.sim.ids import IdSource
from infra.sim.wire import dumps
from infra.sim.malformed import malformed_frame
from infra.sim.ws import DCP_TOPICS, PRIVATE, PRIVATE_TOPICS, PUBLIC, Conn, on_auth, on_ping, op_ack
from messages.types import INTERVALS

if TYPE_CHECKING:
    from infra.sim.faults import Faults


class Sessions:
    def __init__(
        self,
        ids: IdSource,
        symbols: list[str],
        keys: dict[str, str],
        faults: "Faults",
        clock: Clock,
        ack_delay_s: float,
        on_subscribed: Callable[[Conn, list[str]], None],
        on_private_gone: Callable[[Conn], None],
    ):
        self._ids = ids
        self._symbols = symbols
        self._keys = keys
        self._faults = faults
        self._clock = clock
        self._ack_delay_s = ack_delay_s
        self._on_subscribed = on_subscribed
        self._on_private_gone = on_private_gone
        self.conns: dict[Conn, None] = {}
        self.subs: dict[str, dict[Conn, None]] = {}  # public topic -> its connections

    # --- connections ---------------------------------------------------------------------

    def new_conn_id(self, kind: str) -> str:
        if kind == PUBLIC:
            return self._ids.uuid("conn")
        return f"{self._ids.token('conn')}-{self._ids.number('conn-n'):x}"

    def register(self, conn: Conn) -> None:
        self.conns[conn] = None

    def unregister(self, conn: Conn) -> None:
        self.conns.pop(conn, None)
        for topic in conn.topics:
            subs = self.subs.get(topic)
            if subs is not None:
                subs.pop(conn, None)
        if conn.kind == PRIVATE:
            self._on_private_gone(conn)

    def connections(self, kinds: tuple[str, ...]) -> list[Conn]:
        return [c for c in self.conns if c.kind in kinds and not c.closed]

    def drop(self, kinds: tuple[str, ...], close_frame: bool) -> int:
        conns = self.connections(kinds)
        for conn in conns:
            if close_frame:
                asyncio.ensure_future(conn.close())
            else:
                conn.abort()
        return len(conns)

    def silence(self, kinds: tuple[str, ...]) -> int:
        conns = self.connections(kinds)
        for conn in conns:
            conn.silence()
        return len(conns)

    def unsilence_all(self) -> None:
        for conn in self.conns:
            conn.silenced = False

    def broadcast_raw(self, kinds: tuple[str, ...], text: str) -> int:
        conns = self.connections(kinds)
        for conn in conns:
            conn.send(text)
        return len(conns)

    def send_malformed(self, kinds: tuple[str, ...], kind: str) -> int:
        conns = self.connections(kinds)
        for conn in conns:
            conn.send(malformed_frame(kind, self._symbols[0], self._clock.now_ms()))
        return len(conns)

    # --- frames from clients ----------------------------------------------------------------

    def on_frame(self, conn: Conn, frame: dict) -> None:
        op = frame.get("op")
        if op == "ping":
            on_ping(conn, frame, self._clock.now_ms())
        elif op == "auth":
            on_auth(conn, frame, self._keys, self._faults.state.auth_delay_s)
        elif op == "subscribe":
            self._subscribe(conn, frame)
        elif op == "unsubscribe":
            self._unsubscribe(conn, frame)
        else:
            conn.send_obj({"success": False, "ret_msg": f"Invalid op: {op}", "conn_id": conn.conn_id,
                           "req_id": frame.get("req_id") or "", "op": op})

    def _topic_problem(self, conn: Conn, topic: Any) -> str | None:
        if not isinstance(topic, str):
            return "Params Error"
        if conn.kind == PRIVATE:
            if not conn.authed:
                return "Request not authorized"
            base = topic[: -len(".linear")] if topic.endswith(".linear") else topic
            if base in PRIVATE_TOPICS or topic in DCP_TOPICS:
                return None
            return f"error:handler not found,topic:{topic}"
        parts = topic.split(".")
        if len(parts) == 2 and parts[0] == "tickers" and parts[1] in self._symbols:
            return None
        if len(parts) == 3 and parts[0] == "kline" and parts[1] in INTERVALS and parts[2] in self._symbols:
            return None
        return f"error:handler not found,topic:{topic}"

    def _subscribe(self, conn: Conn, frame: dict) -> None:
        args = frame.get("args")
        args = args if isinstance(args, list) else []
        req_id = frame.get("req_id")
        problems = [p for p in (self._topic_problem(conn, t) for t in args) if p]
        new = [t for t in args if self._topic_problem(conn, t) is None and t not in conn.topics]
        for topic in new:
            conn.topics[topic] = None
            if conn.kind == PUBLIC:
                self.subs.setdefault(topic, {})[conn] = None
        conn.pause(self._ack_delay_s)
        ack_ok = not problems and bool(args)
        conn.send_obj(op_ack(conn, "subscribe", req_id, ack_ok, problems[0] if problems else ""))
        self._on_subscribed(conn, new)

    def _unsubscribe(self, conn: Conn, frame: dict) -> None:
        args = frame.get("args")
        args = args if isinstance(args, list) else []
        for topic in args:
            if topic in conn.topics:
                del conn.topics[topic]
                conn.snapshotted.discard(topic)
                self.subs.get(topic, {}).pop(conn, None)
                if topic in DCP_TOPICS and not any(t in conn.topics for t in DCP_TOPICS):
                    self._on_private_gone(conn)
        conn.send_obj(op_ack(conn, "unsubscribe", frame.get("req_id"), True))

    # --- pushes --------------------------------------------------------------------------------

    def push_private(self, topic: str, data: list[dict], now: int) -> None:
        """A private push to every authenticated connection subscribed to `topic` (or `topic.linear`)."""
        frame_id = None
        text = None
        for conn in list(self.conns):
            if conn.kind != PRIVATE or conn.closed or not conn.authed:
                continue
            for sub in (topic, f"{topic}.linear"):
                if sub in conn.topics:
                    if frame_id is None:
                        frame_id = f"{self._ids.token('push', 12)}-{self._ids.number('push-n')}"
                    text = dumps({"id": frame_id, "topic": sub, "creationTime": now, "data": data})
                    conn.send(text)
                    if topic == "execution" and self._faults.state.duplicate_executions > 0:
                        conn.send(text)
        if topic == "execution" and text is not None and self._faults.state.duplicate_executions > 0:
            self._faults.state.duplicate_executions -= 1

