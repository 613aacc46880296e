"""WsPrivate: owns the private WebSocket (auth, order/execution/position/wallet, dcp.future).

One connection at a time, each a `PrivateSocket` (infra/bybit/private_socket.py),
and every step of it on this actor's thread, in this order:

1. open: pybit connects and sends `auth`;
2. wait for the `auth` answer (at most `private_ws.auth_timeout_s`). A refusal
   is `ws.auth_failed` with the venue's reason; nothing is subscribed on a
   socket that is not authenticated;
3. subscribe the account topics and `dcp.future`, and wait for their acks;
4. tell the StateStore `SocketStatus(connected=True)`: a new seam, so the
   trading gate (`ready`) closes until step 5 is done;
5. reseed over REST through the gateway (query lane): wallet, a strict
   position row per symbol that matters (so one closed during the outage is
   seen flat), open orders, and executions since the last one seen. The
   StateStore folds it in (`AccountReseed`) and the seam is healed.

A lost socket (`on_down`, told from pybit's thread) is `ws.disconnected`,
`SocketStatus(connected=False)`, and a new connection after a back-off that
doubles up to `private_ws.reconnect_backoff_max_s`. At start, a socket that
cannot connect or authenticate fails the start (the node never runs blind
on its account); later, it is retried forever. A reseed that fails is
retried with the same back-off while the gate stays closed.

Frames are parsed and told to the StateStore on pybit's thread by
`PrivateFrameRouter`; each connection has its own router, retired when the
connection is, so late frames of an old socket never reach state.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import Any, Callable

import pykka

from actors.base import ActorContext, Directory, NodeActor, Role
from actors.frame_router import Frame, FrameRouter, Parsed
from actors.timers import tell_later
from actors.ws_base import WsActor
from messages.account import AccountReseed, Execution, Order, Position, PrivatePulse, Wallet, ws_each
from messages.control import SocketStatus
from messages.queries import GetSnapshot
from messages.types import Message, now_utc, utc_to_ms

ACCOUNT_TOPICS = ("order", "execution", "position", "wallet")
DCP_TOPIC = "dcp.future"
# Overlap of the execution reseed with the last execution seen (duplicates are dropped by execId).
# Bybit answers a startTime-only execution query with at most 7 days from it.
_VENUE_WINDOW = timedelta(days=6)
_EXEC_OVERLAP_MS = 5_000


class Link:
    """What one connection has answered so far; written on pybit's thread, waited on by the actor."""

    def __init__(self, number: int):
        self.number = number
        self.auth_ok: bool | None = None
        self.auth_reason = ""
        self.acks: list[tuple[bool, str]] = []
        self.down_reason: str | None = None
        self._cond = threading.Condition()

    def update(self, fn: Callable[["Link"], None]) -> None:
        with self._cond:
            fn(self)
            self._cond.notify_all()

    def wait(self, done: Callable[["Link"], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: done(self) or self.down_reason is not None, timeout)


class PrivateFrameRouter(FrameRouter):
    """Raw private frames -> messages for the StateStore; op answers -> the connection's `Link`."""

    def __init__(self, directory: Directory, generation: int, link: Link | None = None):
        super().__init__(directory, Role.WS_PRIVATE, generation)
        self.link = link or Link(0)
        self._pulse = PrivatePulse(generation=generation)

    def on_frame(self, frame: Frame) -> None:
        """pybit's `callback_function`: every frame of the connection, raw."""
        # The directory knows when the Supervisor retired this generation, even if its actor is stuck.
        if self.retired or self._directory.is_retired(Role.WS_PRIVATE, self.generation):
            self.counts["late"] += 1
            return
        op = frame.get("op")
        if op is not None:
            self._on_op(op, frame)
            return
        topic = str(frame.get("topic", ""))
        base = topic.split(".")[0]
        if base == "order":
            self.on_order(frame)
        elif base == "execution":
            self.on_execution(frame)
        elif base == "position":
            self.on_position(frame)
        elif base == "wallet":
            self.on_wallet(frame)
        elif base == "dcp":
            self.on_dcp(frame)
        else:
            self.on_garbage(f"unknown topic {topic!r}")

    def on_garbage(self, what: str) -> None:
        """A frame that is not JSON, not an object, or of no topic we know: counted, logged, dropped."""
        self.reject("private frame", [what])

    def stream_of(self, frame: Frame) -> str:
        """Private topics may carry a category (`order.linear`): health counts them by their base."""
        return super().stream_of(frame).split(".")[0]

    def _on_op(self, op: Any, frame: Frame) -> None:
        self._directory.tell(Role.STATE_STORE, self._pulse)
        ok = frame.get("success") is True
        reason = str(frame.get("ret_msg") or "")
        if op == "auth":
            def set_auth(link: Link) -> None:
                link.auth_ok, link.auth_reason = ok, reason
            self.link.update(set_auth)
        elif op == "subscribe":
            self.link.update(lambda link: link.acks.append((ok, reason)))

    def on_order(self, frame: Frame) -> None:
        self._route_each(frame, Order)

    def on_execution(self, frame: Frame) -> None:
        self._route_each(frame, Execution)

    def on_position(self, frame: Frame) -> None:
        self._route_each(frame, Position)

    def on_wallet(self, frame: Frame) -> None:
        self._route_each(frame, Wallet)

    def _route_each(self, frame: Frame, kind: type) -> None:
        """Each item of the frame on its own (`ws_each`): the good ones reach state, each bad one
        is refused and counted. Unlike a kline frame (one bar's updates, refused whole), a
        private frame's items are unrelated, and a dropped fill stays lost until a reconnect."""
        def parse(f: Frame) -> Parsed:
            good, bad = ws_each(kind, f)
            for exc in bad:
                self.reject(exc.what, exc.reasons, stream=self.stream_of(f))
            return [(Role.STATE_STORE, m) for m in good]

        self.route(frame, parse)

    def on_dcp(self, frame: Frame) -> None:
        """dcp.future carries nothing the node keeps; the subscription itself is what counts."""


class SocketDown(Message):
    """Told from pybit's thread: connection `number` is lost."""

    number: int
    reason: str


class Reconnect(Message):
    number: int  # the connection that was lost; stale if a newer one exists


class Reseed(Message):
    number: int


class ConnectFailed(RuntimeError):
    pass


class SubscribeRefused(RuntimeError):
    pass


def ping_interval_s(private_stale_after_s: float) -> int:
    """pybit's ping period for the private socket: at least three pongs per staleness window.

    Bybit's private topics are silent on a quiet account, so the pongs are
    what keeps a live socket fresh; pybit's default of 20 s fits the default
    window of 60 s, a shorter window needs faster pings.
    """
    return max(2, min(20, int(private_stale_after_s / 3)))


def make_socket(ctx: ActorContext, **hooks: Any) -> Any:
    from infra.bybit.private_socket import PrivateSocket

    node = ctx.config.node
    ping = ping_interval_s(float(node.supervisor.private_stale_after_s))
    return PrivateSocket(ctx.urls, ctx.config.credentials, auth_expire_s=node.private_ws.auth_expire_s,
                         ping_interval=ping, ping_timeout=min(10, ping // 2), **hooks)


class WsPrivate(WsActor):
    role = Role.WS_PRIVATE

    def __init__(self, ctx: ActorContext, socket_factory: Callable[..., Any] = make_socket,
                 clock: Callable[[], datetime] = now_utc):
        super().__init__(ctx, PrivateFrameRouter(ctx.directory, ctx.generation))
        cfg = ctx.config.node.private_ws
        self._open = socket_factory
        self._now = clock
        self._auth_timeout_s = float(cfg.auth_timeout_s)
        self._backoff_s = float(cfg.reconnect_backoff_s)
        self._backoff_max_s = float(cfg.reconnect_backoff_max_s)
        self._first_lookback = timedelta(hours=float(cfg.executions_lookback_h))
        self._ask_timeout_s = float(ctx.config.node.supervisor.ask_timeout_s)
        self._number = 0
        self._up = False
        self._failures = 0
        self._timers: list[threading.Timer] = []
        self._stopping = False

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {SocketDown: self._on_down, Reconnect: self._on_reconnect, Reseed: self._on_reseed}

    # --- lifecycle ---------------------------------------------------------------

    def on_start(self) -> None:
        if self._ctx.urls is None or self._ctx.config.credentials is None:
            raise RuntimeError("WsPrivate needs the venue's URLs and API credentials")
        # If the Supervisor replaces this actor while it is stuck, its socket is still closed
        # (on the Supervisor's throwaway thread) and no new one is opened afterwards.
        self._ctx.directory.on_retire(Role.WS_PRIVATE, self._ctx.generation, self._retired_from_outside)
        self._connect()  # at start a failure raises: the start fails
        super().on_start()
        # The REST reseed runs as the first message, not inside on_start: the Supervisor's
        # readiness probe must not wait for (or time out on) the venue's REST answers.
        self.actor_ref.tell(Reseed(number=self._number))

    def on_stop(self) -> None:
        self._stopping = True
        for t in self._timers:
            t.cancel()
        self._router.retired = True
        if self._ws is not None:
            self._ws.close()
            self._ws = None
        if self._up:
            self._status(False, "stopped")
        NodeActor.on_stop(self)

    def _retired_from_outside(self) -> None:
        self._stopping = True
        ws = self._ws
        if ws is not None:
            ws.close()

    # --- connection ----------------------------------------------------------------

    def _connect(self) -> None:
        """Open, authenticate, subscribe. Raises ConnectFailed (the socket closed) on any failure."""
        self._number += 1
        n = self._number
        link = Link(n)
        self._router.retired = True  # the previous connection's late frames stop here
        self._router = PrivateFrameRouter(self._ctx.directory, self._ctx.generation, link)
        me = self.actor_ref
        router = self._router

        def on_down(reason: str) -> None:
            link.update(lambda lk: setattr(lk, "down_reason", reason))
            try:
                me.tell(SocketDown(number=n, reason=reason))
            except pykka.ActorDeadError:
                pass

        url = self._ctx.urls.ws_private if self._ctx.urls else None
        try:
            self._ws = self._open(self._ctx, on_frame=router.on_frame, on_down=on_down, on_garbage=router.on_garbage)
        except Exception as exc:  # noqa: BLE001 - pybit raises plain websocket errors
            self._ws = None
            self._log.error("ws.connect_failed", url=url, error=repr(exc))
            raise ConnectFailed(f"private socket did not connect: {exc!r}") from exc
        link.wait(lambda lk: lk.auth_ok is not None, self._auth_timeout_s)
        if link.auth_ok is None:
            self._drop_socket()
            if link.down_reason is not None:
                self._log.error("ws.connect_failed", url=url, error=f"lost before the auth answer: {link.down_reason}")
                raise ConnectFailed(f"lost before the auth answer: {link.down_reason}")
            self._log.error("ws.auth_failed", url=url, reason=f"no auth answer within {self._auth_timeout_s}s")
            raise ConnectFailed("no auth answer")
        if not link.auth_ok:
            self._drop_socket()
            self._log.error("ws.auth_failed", url=url, reason=link.auth_reason or "refused without a reason")
            raise ConnectFailed(f"auth refused: {link.auth_reason}")
        # Only now, authenticated: the account topics (one request), acked, then DCP (its own
        # request: private acks need not echo a req_id, so one request is in flight at a time).
        self._subscribe(link, list(ACCOUNT_TOPICS), url)
        topics: tuple[str, ...] = ACCOUNT_TOPICS
        try:
            self._subscribe(link, [DCP_TOPIC], url)
            topics = (*ACCOUNT_TOPICS, DCP_TOPIC)
        except SubscribeRefused as exc:
            # DCP is granted per account; without it the account topics still work. The gateway's
            # start-up check says loudly whether disconnect-cancel-all is armed.
            self._log.warning("ws.dcp_subscribe_failed", url=url, reason=str(exc))
        self._up = True
        self._failures = 0
        self._log.info("ws.connected", url=url, topics=list(topics), connection=n)
        self._status(True, "", topics)

    def _subscribe(self, link: Link, topics: list[str], url: str | None) -> None:
        """Send one subscribe and wait for its ack. Lost or unanswered: ConnectFailed; refused: SubscribeRefused."""
        before = len(link.acks)
        sent = self._ws.send_op("subscribe", topics)
        if not sent or not link.wait(lambda lk: len(lk.acks) > before, self._auth_timeout_s) or link.down_reason:
            self._drop_socket()
            reason = link.down_reason or ("socket closed" if not sent else "no subscribe ack in time")
            self._log.error("ws.subscribe_failed", url=url, topics=topics, reason=reason)
            raise ConnectFailed(f"subscribe {topics} not acknowledged: {reason}")
        ok, reason = link.acks[before]
        if not ok:
            if topics == [DCP_TOPIC]:
                raise SubscribeRefused(reason or "refused without a reason")
            self._drop_socket()
            self._log.error("ws.subscribe_failed", url=url, topics=topics, reason=reason)
            raise ConnectFailed(f"subscribe {topics} refused: {reason}")

    def _status(self, connected: bool, reason: str, topics: tuple[str, ...] = ()) -> None:
        self._ctx.directory.tell(Role.STATE_STORE, SocketStatus(socket="private", generation=self._ctx.generation,
                                                                 connected=connected, topics=topics, reason=reason))

    def _drop_socket(self) -> None:
        if self._ws is not None:
            self._ws.close()
            self._ws = None

    def _on_down(self, msg: SocketDown) -> None:
        if msg.number != self._number or not self._up:
            return  # an older connection, or one that never came up (its failure is handled where it failed)
        self._up = False
        self._router.retired = True
        self._drop_socket()
        self._log.warning("ws.disconnected", reason=msg.reason, connection=msg.number)
        self._status(False, msg.reason)
        self._retry_later(Reconnect(number=msg.number))

    def _on_reconnect(self, msg: Reconnect) -> None:
        if msg.number != self._number or self._up or self._stopping:
            return
        try:
            self._connect()
        except ConnectFailed as exc:
            self._status(False, str(exc))
            self._retry_later(Reconnect(number=self._number))
            return
        self._reseed(self._number)

    # --- reseed ----------------------------------------------------------------

    def _on_reseed(self, msg: Reseed) -> None:
        if msg.number == self._number and self._up and not self._stopping:
            self._reseed(msg.number)

    def _reseed(self, number: int) -> None:
        gateway = self._ctx.gateway
        if gateway is None:
            self._log.error("ws.reseed_failed", connection=number, error="no gateway: the trading gate stays closed")
            return
        started = time.monotonic()
        try:
            reseed = self._read_account(gateway)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the gate closed and is retried
            self._log.error("ws.reseed_failed", connection=number, error=repr(exc), error_type=type(exc).__name__)
            self._retry_later(Reseed(number=number))
            return
        self._failures = 0
        self._ctx.directory.tell(Role.STATE_STORE, reseed)
        self._log.info("ws.reseeded", connection=number, positions=len(reseed.positions),
                       open_orders=len(reseed.open_orders), executions=len(reseed.executions),
                       ms=round((time.monotonic() - started) * 1000, 1))

    def _read_account(self, gateway: Any) -> AccountReseed:
        requested_at = self._venue_now(gateway)
        known_open: set[str] = set()
        last_exec: datetime | None = None
        ref = self._ctx.directory.get(Role.STATE_STORE)
        if ref is not None:  # what the state already holds: open symbols and the last execution seen
            snap = ref.ask(GetSnapshot(), timeout=self._ask_timeout_s)
            known_open = {p.symbol for p in snap.positions.values() if p.is_open}
            times = [e.exec_time for e in (*snap.recent_executions, *snap.other_executions)]
            last_exec = max(times) if times else None
        wallet = gateway.get_wallet()
        open_rows = gateway.get_open_positions()
        # A strict row per symbol: the settleCoin listing cannot say "flat" (DATA-019).
        symbols = sorted(set(self._ctx.config.node.symbols) | known_open | {p.symbol for p in open_rows})
        positions = tuple(gateway.get_positions(symbols).values())
        orders = tuple(gateway.get_open_orders())
        start = (last_exec - timedelta(milliseconds=_EXEC_OVERLAP_MS)) if last_exec else requested_at - self._first_lookback
        # The venue's clock ends the range: ours may lag it, and a last execution stamped after
        # our "now" once made startTime > endTime, failing every reseed and keeping the gate shut
        # for good. Only a start further back than the venue's 7-day window needs an explicit end.
        now = self._now()
        end_ms = utc_to_ms(now) if now - start > _VENUE_WINDOW else None
        executions = tuple(gateway.get_executions(start_ms=utc_to_ms(start), end_ms=end_ms))
        return AccountReseed(wallet=wallet, positions=positions, open_orders=orders, executions=executions,
                             symbols_checked=tuple(symbols), requested_at=requested_at,
                             generation=self._ctx.generation)

    def _venue_now(self, gateway: Any) -> datetime:
        """When the reads are sent, by the venue's clock: the StateStore compares it with the
        venue's order and position times, so by ours (seconds off is common) an order placed
        just after the read was sent would look older than the read and be dropped as gone."""
        server_time = getattr(gateway, "server_time", None)
        if server_time is None:
            return self._now()
        try:
            skew_ms = int(server_time().skew_ms)
        except Exception as exc:  # noqa: BLE001 - the reads may still work; our clock is the fallback
            self._log.warning("ws.reseed_clock_unknown", error=repr(exc))
            return self._now()
        return self._now() + timedelta(milliseconds=skew_ms)

    # --- timers --------------------------------------------------------------------

    def _retry_later(self, msg: Message) -> None:
        if self._stopping:
            return
        self._failures += 1
        delay = min(self._backoff_max_s, self._backoff_s * 2 ** (self._failures - 1))
        self._log.info("ws.retry_scheduled", what=type(msg).__name__, delay_s=round(delay, 3), attempt=self._failures)
        timer = tell_later(self.actor_ref, msg, delay)
        self._timers = [t for t in self._timers if t.is_alive()] + [timer]
