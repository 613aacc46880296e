"""The WebSocket side: `/v5/public/linear` and `/v5/private`.

Each connection has an outbox drained by one writer task, so frames leave in
exactly the order the simulator produced them. A subscribe ack is preceded by
a short pause in that outbox: pybit stores a subscription's `req_id` only
after `send()` returns, and an ack that arrives first kills its socket
(REFERENCE.md 5.2); real network latency normally hides that race. Because
the pause sits in the outbox, nothing produced later can overtake the ack.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from infra.logging import get_logger
from infra.sim.clock import wall_ms
from infra.sim.wire import dumps

if TYPE_CHECKING:
    from infra.sim.exchange import Exchange

log = get_logger("sim")

PUBLIC, PRIVATE = "public", "private"
PRIVATE_TOPICS = ("order", "execution", "position", "wallet")
DCP_TOPICS = ("dcp.future", "dcp.spot", "dcp.option")


class _Pause:
    __slots__ = ("seconds",)

    def __init__(self, seconds: float):
        self.seconds = seconds


class Conn:
    """One client WebSocket."""

    def __init__(self, ex: "Exchange", ws: web.WebSocketResponse, kind: str, conn_id: str, transport: Any):
        self.ex = ex
        self.ws = ws
        self.kind = kind
        self.conn_id = conn_id
        self.transport = transport
        self.topics: dict[str, None] = {}  # ordered set
        # Ticker topics whose snapshot this connection has been sent: deltas go only to these,
        # so a delta can never reach a client before the snapshot it applies to (REFERENCE.md 4.7).
        self.snapshotted: set[str] = set()
        self.authed = False
        self.closed = False
        # Stuck: open, protocol PINGs still answered by aiohttp, but no frame of any kind
        # (data, pong, ack) ever leaves again. Set by the `silence_open_sockets` switch.
        self.silenced = False
        self.outbox: asyncio.Queue[Any] = asyncio.Queue()
        self.writer = asyncio.get_running_loop().create_task(self._write())

    def send(self, frame: str | bytes) -> None:
        """Queue a text frame; bytes go out as they are (a malformed-frame switch's invalid UTF-8)."""
        if self.closed or self.silenced or self.ex.faults.state.is_silent(self.kind):
            return
        self.outbox.put_nowait(frame)

    def silence(self) -> None:
        """Send nothing from now on, including what is queued but not yet written: once the
        switch returns, no frame of this connection reaches the client."""
        self.silenced = True
        while not self.outbox.empty():
            self.outbox.get_nowait()

    def send_obj(self, obj: dict) -> None:
        self.send(dumps(obj))

    def pause(self, seconds: float) -> None:
        if seconds > 0 and not self.closed and not self.silenced:
            self.outbox.put_nowait(_Pause(seconds))

    async def _write(self) -> None:
        try:
            while True:
                item = await self.outbox.get()
                if isinstance(item, _Pause):
                    await asyncio.sleep(item.seconds)
                    continue
                if self.ws.closed:
                    return
                if isinstance(item, bytes):
                    await self.ws.send_frame(item, WSMsgType.TEXT)
                else:
                    await self.ws.send_str(item)
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            return

    def abort(self) -> None:
        """Drop the TCP connection without a close frame (what a network failure looks like)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    async def close(self, code: int = 1000) -> None:
        self.closed = True
        await self.ws.close(code=code)


async def handle_public(request: web.Request) -> web.StreamResponse:
    return await _handle(request, PUBLIC)


async def handle_private(request: web.Request) -> web.StreamResponse:
    return await _handle(request, PRIVATE)


async def _handle(request: web.Request, kind: str) -> web.StreamResponse:
    from infra.sim.exchange import EXCHANGE  # noqa: PLC0415 - exchange imports this module

    ex: Exchange = request.app[EXCHANGE]
    if ex.faults.state.ip_ban.active():
        return web.Response(status=403, text="access too frequent")
    ws = web.WebSocketResponse(autoping=True, heartbeat=None, max_msg_size=1 << 20)
    await ws.prepare(request)
    conn = Conn(ex, ws, kind, ex.sessions.new_conn_id(kind), request.transport)
    ex.sessions.register(conn)
    log.info("sim.ws.connected", channel=kind, conn_id=conn.conn_id)
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                frame = json.loads(msg.data)
            except ValueError:
                continue
            if isinstance(frame, dict):
                ex.sessions.on_frame(conn, frame)
    finally:
        conn.closed = True
        conn.writer.cancel()
        ex.sessions.unregister(conn)
        log.info("sim.ws.disconnected", channel=kind, conn_id=conn.conn_id)
    return ws


def on_ping(conn: Conn, frame: dict, now_ms: int) -> None:
    req_id = frame.get("req_id")
    if conn.kind == PUBLIC:
        conn.send_obj({"success": True, "ret_msg": "pong", "conn_id": conn.conn_id, "req_id": req_id or "", "op": "ping"})
    else:
        pong: dict[str, Any] = {"op": "pong", "args": [str(now_ms)], "conn_id": conn.conn_id}
        if req_id:
            pong = {"req_id": req_id, **pong}
        conn.send_obj(pong)


def check_ws_auth(args: Any, keys: dict[str, str]) -> str | None:
    """None when `args` = [key, expires, signature] is valid, else Bybit's ret_msg."""
    if not isinstance(args, list) or len(args) != 3:
        return "Params Error"
    key, expires, signature = args
    secret = keys.get(key) if isinstance(key, str) else None
    if secret is None:
        return "Invalid apikey"
    try:
        expires_ms = int(expires)
    except (TypeError, ValueError):
        return "Params Error"
    if expires_ms <= wall_ms():
        return "Params Error"
    expected = hmac.new(secret.encode(), f"GET/realtime{expires}".encode(), hashlib.sha256).hexdigest()
    if not isinstance(signature, str) or not hmac.compare_digest(expected, signature):
        return "Signature verification failed"
    return None


def op_ack(conn: Conn, op: str, req_id: Any, success: bool, ret_msg: str = "") -> dict:
    """The answer to an op, in the channel's own shape (REFERENCE.md 4.3-4.4)."""
    if conn.kind == PUBLIC:
        return {"success": success, "ret_msg": ret_msg, "conn_id": conn.conn_id, "req_id": req_id or "", "op": op}
    ack: dict[str, Any] = {"success": success, "ret_msg": ret_msg, "op": op, "conn_id": conn.conn_id}
    if req_id:
        ack["req_id"] = req_id
    return ack


def on_auth(conn: Conn, frame: dict, keys: dict[str, str], delay_s: float) -> bool:
    if conn.kind != PRIVATE:
        conn.send_obj(op_ack(conn, "auth", frame.get("req_id"), False, "Params Error"))
        return False
    problem = check_ws_auth(frame.get("args"), keys)
    conn.authed = problem is None
    conn.pause(delay_s)
    conn.send_obj(op_ack(conn, "auth", frame.get("req_id"), problem is None, problem or ""))
    return conn.authed
