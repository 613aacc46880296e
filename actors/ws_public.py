"""WsPublic: owns the public socket and keeps it carrying exactly the desired set.

The desired set (messages/subscriptions.py) is held by the Supervisor and
arrives in the context at start and as a new `DesiredSubscriptions` on every
change. The socket is a `ManagedWebSocket` (infra/bybit/clients.py): every
frame reaches `PublicFrameRouter.on_frame` raw, on pybit's thread; reconnects
are retried forever with back-off; each (re)connect tells this actor
`SocketUp`, which sends one `subscribe` with the whole desired set. So after
any reconnect the socket carries the desired set, runtime additions included
and removals excluded (DATA-010), without trusting pybit's replay.

Removing streams sends an `unsubscribe` op on the live socket: pybit cannot
drop one topic of a multi-topic subscription (REFERENCE.md 5.2), but here
pybit never subscribes anything, so the op is plain Bybit protocol; frames
of a removed topic still in flight are counted and dropped by the router.

Market messages for the StateStore (tickers, klines) do not go one tell per
frame: they ride a coalescing inbox (actors/inbox.py) that wakes the
StateStore once per batch, in frame order, with nothing stranded.

Tickers are not merged by pybit (its merge raised on a delta that came before
its snapshot and ended the stream): snapshots and deltas go to the
StateStore, which merges them and drops a delta it has no snapshot for.

Public seam: the router remembers the newest closed bar per series. A closed
bar that is not the next one after it (a reconnect, or a confirm frame the
venue never sent) is parked with this actor as a `BarGap`; the actor fetches
the missing bars over REST (backfill lane) on its own thread, tells them to
the DbWriter and the StateStore, and only then hands the parked bar to the
StateStore, so its buffer receives the bars in time order. A replacement
WsPublic (the Supervisor restarts it) asks the StateStore, once at start
and with a timeout, where each series' bars stopped, so a seam across the
restart is healed as well.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import pykka
from tenacity import Retrying, stop_after_attempt, stop_after_delay, wait_exponential

from actors.base import ActorContext, Directory, Role
from actors.frame_router import Frame, FrameRouter, Parsed
from actors.inbox import Inbox
from actors.timers import Repeater
from actors.ws_base import WsActor
from infra.bybit.clients import ManagedWebSocket, make_managed_public_ws
from infra.store import HistoryStore
from messages.commands import Subscribe, Unsubscribe
from messages.control import SocketStatus
from messages.market import ClosedBar, Kline, Ticker
from messages.queries import GetSnapshot
from messages.subscriptions import DesiredSubscriptions
from messages.types import Message, next_open_ms, utc_to_ms

KLINE_PAGE = 1000
MAX_BATCH = 256  # market messages queued for the StateStore before it is woken even mid-burst
HEAL_ATTEMPTS = 3
HEAL_BUDGET_MAX_S = 10.0


# --- messages to itself (from pybit's thread, its watchdog, its router) -----------------

class SocketUp(Message):
    epoch: int


class SocketDown(Message):
    reason: str


class CheckSocket(Message):
    pass


class BarGap(Message):
    """A closed bar arrived that is not the next after `after_ms`: heal, then deliver it."""

    kline: Kline
    after_ms: int


class Parked(Message):
    """An update of a series whose seam is still being healed: delivered behind the seam."""

    kline: Kline


class PublicFrameRouter(FrameRouter):
    """Runs on pybit's thread: dispatch by topic, parse, tell. Never raises."""

    def __init__(self, directory: Directory, generation: int, topics: tuple[str, ...] = (),
                 state_inbox: Inbox | None = None):
        super().__init__(directory, Role.WS_PUBLIC, generation)
        # Market messages for the StateStore ride this coalescing inbox (one wake per batch, not
        # per frame); without one, each is told on its own.
        self._state_inbox = state_inbox
        # True once the socket calls on_frame_done: market messages then wake the StateStore
        # once per burst of frames (or every MAX_BATCH), not per frame.
        self.bursts = False
        # The actor that heals this router's seams (set in its on_start, before the socket opens).
        self.owner: Any = None
        # Swapped whole by the actor (one reference assignment, safe across threads).
        self.topics: frozenset[str] = frozenset(topics)
        self.removed: frozenset[str] = frozenset()
        self.counts.update(unsubscribed=0, acks_failed=0)
        # open ms of the newest closed bar seen per (symbol, interval); written only on pybit's thread.
        self.last_closed: dict[tuple[str, str], int] = {}
        # Per series, the updates handed to the actor (a BarGap, or a Parked behind one) that it
        # has not yet delivered. While any is, the series' next updates are parked too: told
        # straight to the StateStore they would overtake the seam, whose bars its buffer would
        # then refuse as out of order. Raised here, lowered by the actor once delivered.
        self._parked: dict[tuple[str, str], int] = {}
        self._parked_lock = threading.Lock()

    def on_frame(self, frame: Frame) -> None:
        try:
            if self.is_late():
                self.counts["late"] += 1
                return
            topic = frame.get("topic")
            if isinstance(topic, str) and topic in self.topics:
                if topic.startswith("tickers."):
                    self.route_one(frame, Ticker.from_bybit, Role.STATE_STORE)
                else:
                    self.route(frame, self._parse_kline)
            elif topic is None and frame.get("op") in ("subscribe", "unsubscribe"):
                self._on_ack(frame)
            elif isinstance(topic, str) and topic in self.removed:
                self.counts["unsubscribed"] += 1  # in flight when the unsubscribe went out
            else:
                self.counts["frames"] += 1
                self.reject(f"frame topic {topic!r}", ["topic: not a subscribed public stream"])
        except Exception as exc:  # never raise into pybit
            self.counts["errors"] += 1
            self._log.error("ws.callback_error", error=repr(exc))

    def deliver(self, recipient: Role, message: Any) -> None:
        inbox = self._state_inbox
        if recipient is Role.WS_PUBLIC and self.owner is not None:
            self._to_owner(message)
        elif inbox is None or recipient is not Role.STATE_STORE:
            super().deliver(recipient, message)
        elif not inbox.put(message, wake=not self.bursts or len(inbox) + 1 >= MAX_BATCH):
            self.undeliverable(recipient, message)

    def _to_owner(self, message: Any) -> None:
        """A seam (or an update parked behind one) goes to this router's own actor, not the
        directory's WsPublic: the Supervisor registers a new one only after its first Ping, and
        its socket may deliver before that. Its actor gone, the update goes to state unhealed
        rather than nowhere (the seam is then `python main.py heal`'s)."""
        try:
            self.owner.tell(message)
        except pykka.ActorDeadError:
            kline = message.kline
            self.unpark((kline.symbol, kline.interval))
            self.deliver(Role.STATE_STORE, kline)

    def on_frame_done(self, data_waiting: Callable[[], bool]) -> None:
        """After each frame (from the socket): at the end of a burst, wake the StateStore.

        The socket is asked only when something queued still needs a wake (a drain already
        outstanding will take it): in a flood that is a syscall saved on most frames."""
        inbox = self._state_inbox
        if inbox is not None and inbox.needs_wake() and not data_waiting():
            inbox.wake()

    @property
    def state_inbox_queued(self) -> int:
        return len(self._state_inbox) if self._state_inbox is not None else 0

    @property
    def state_inbox_dropped(self) -> int:
        """Market messages lost with a dead StateStore: every one queued for it, including the
        ones whose put found it dead (those are also in `undelivered`)."""
        return self._state_inbox.dropped if self._state_inbox is not None else 0

    def on_burst_end(self) -> None:
        """What is queued must not wait for a next frame: the socket went down or is being
        closed, or the actor queued healed bars from its own thread."""
        if self._state_inbox is not None:
            self._state_inbox.wake()

    def on_garbage(self, problem: str, text: str) -> None:
        """A frame that is not a JSON object (from ManagedWebSocket)."""
        self.counts["frames"] += 1
        self.reject("frame", [f"<frame>: {problem} (got {text[:80]!r})"])

    # Kept for callers that dispatch by stream themselves (tests, tools).
    def on_kline(self, frame: Frame) -> None:
        self.route(frame, self._parse_kline)

    def on_ticker(self, frame: Frame) -> None:
        self.route_one(frame, Ticker.from_bybit, Role.STATE_STORE)

    def _parse_kline(self, frame: Frame) -> Parsed:
        klines = Kline.from_bybit(frame)  # validates every item: a bad one refuses the frame
        out: list[tuple[Role, Any]] = []
        for kline in klines:
            key = (kline.symbol, kline.interval)
            if not kline.confirm:
                out.append(self._to_state(key, kline))
                continue
            bar = kline.closed_bar()
            out.append((Role.DB_WRITER, bar))
            last = self.last_closed.get(key)
            if last is None or bar.open_ms >= last:
                self.last_closed[key] = bar.open_ms
            if last is not None and bar.open_ms > next_open_ms(kline.interval, last):
                self._park(key)
                out.append((Role.WS_PUBLIC, BarGap(kline=kline, after_ms=last)))
            else:
                out.append(self._to_state(key, kline))
        return out

    def _to_state(self, key: tuple[str, str], kline: Kline) -> tuple[Role, Any]:
        """Straight to the StateStore, or behind the series' seam if one is still being healed."""
        with self._parked_lock:
            if not self._parked.get(key):
                return Role.STATE_STORE, kline
            self._parked[key] += 1
        return Role.WS_PUBLIC, Parked(kline=kline)

    def _park(self, key: tuple[str, str]) -> None:
        with self._parked_lock:
            self._parked[key] = self._parked.get(key, 0) + 1

    def unpark(self, key: tuple[str, str]) -> None:
        """The actor delivered one parked update of the series (in order, behind its seam)."""
        with self._parked_lock:
            left = self._parked.get(key, 0) - 1
            if left > 0:
                self._parked[key] = left
            else:
                self._parked.pop(key, None)

    def _on_ack(self, frame: Frame) -> None:
        if frame.get("success") is False:
            self.counts["acks_failed"] += 1
            self._log.error("ws.subscribe_failed", op=frame.get("op"), ret_msg=frame.get("ret_msg"),
                            req_id=frame.get("req_id"))


# --- the actor ----------------------------------------------------------------------------

class WsPublic(WsActor):
    role = Role.WS_PUBLIC
    _router: PublicFrameRouter

    def __init__(self, ctx: ActorContext, socket_factory: Callable[..., Any] | None = None):
        desired = ctx.subscriptions
        if desired is None:
            desired = DesiredSubscriptions.from_config(ctx.config.node.symbols)
        self._desired: DesiredSubscriptions = desired
        inbox = Inbox(ctx.directory, Role.STATE_STORE)
        super().__init__(ctx, PublicFrameRouter(ctx.directory, ctx.generation, desired.topics(), state_inbox=inbox))
        self._socket_factory = socket_factory or make_managed_public_ws
        self._ws: ManagedWebSocket | None = None
        self._connected = False
        self._epoch_seen = 0  # the socket epoch whose SocketUp this actor handled
        self._connections = 0
        self._dead_checks = 0
        self._watchdog: Repeater | None = None
        self._check_every = float(ctx.config.node.supervisor.check_interval_s)
        self._stats_every = float(ctx.config.node.log.metrics_interval_s)
        self._stats_at = time.monotonic()

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {
            DesiredSubscriptions: self._on_desired,
            Subscribe: self._forward_to_supervisor,
            Unsubscribe: self._forward_to_supervisor,
            SocketUp: self._on_up,
            SocketDown: self._on_down,
            CheckSocket: self._on_check,
            BarGap: self._on_gap,
            Parked: self._on_parked,
        }

    # --- lifecycle -------------------------------------------------------------------

    def on_start(self) -> None:
        if self._ctx.urls is None:
            raise RuntimeError("WsPublic needs the venue's URLs")
        self._seed_last_closed()
        self._router.owner = self.actor_ref
        self._open_socket()  # pybit connects inside its constructor and raises if it cannot
        # Replaced while stuck (on_stop never runs): the Supervisor's retire hook closes the socket.
        self._ctx.directory.on_retire(Role.WS_PUBLIC, self._ctx.generation, self._retire)
        self._log.info("ws.connected", url=self._ctx.urls.ws_public)
        # Pykka has no timers; a socket pybit never reports as lost is caught by this check.
        self._watchdog = Repeater(self.actor_ref, CheckSocket, self._check_every, name="ws-public-watchdog").start()
        super().on_start()

    def on_stop(self) -> None:
        self._retire()
        self._status(False, "stopped")
        self._log.info("actor.stopped")

    def _retire(self) -> None:
        """Close this generation's socket for good; safe from any thread, and twice."""
        if self._watchdog is not None:
            self._watchdog.stop()
        self._router.retired = True
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.close()
        self._router.on_burst_end()  # what this generation queued still reaches state

    def _seed_last_closed(self) -> None:
        """A replacement knows where its predecessor's bars stopped, so a seam across the
        restart is healed too: the newest closed bar per series from the StateStore, and for
        a series it does not hold (a StateStore restarted empty, whose dependents the sockets
        are), the newest one in the history file."""
        store = self._ctx.directory.get(Role.STATE_STORE)
        if store is not None and hasattr(store, "ask"):
            try:
                snap = store.ask(GetSnapshot(), timeout=float(self._ctx.config.node.supervisor.ask_timeout_s))
            except Exception as exc:  # noqa: BLE001 - no seed only means no heal across this restart
                self._log.warning("ws.seed_failed", error=repr(exc))
            else:
                for key, bars in getattr(snap, "bars", {}).items():
                    if bars:
                        self._router.last_closed[key] = bars[-1].open_ms
        if self._ctx.generation > 0:  # the first generation's seam is the DbWriter's start-up catch-up
            self._seed_from_history([k for k in self._desired.kline_series() if k not in self._router.last_closed])

    def _seed_from_history(self, series: list[tuple[str, str]]) -> None:
        if not series:
            return
        node = self._ctx.config.node
        history = HistoryStore.for_node(node, owner=f"ws_public seed (generation {self._ctx.generation})")
        if not history.exists():
            return
        try:
            # One short read: the DbWriter's flushes wait for it at most this long, then retry.
            with history.session(timeout_s=float(node.supervisor.ask_timeout_s)) as s:
                for key in series:
                    info = s.series_info(*key)
                    if info is not None and info.last_open is not None:
                        self._router.last_closed[key] = utc_to_ms(info.last_open)
        except Exception as exc:  # noqa: BLE001 - no seed only means no heal across this restart
            self._log.warning("ws.seed_failed", error=repr(exc), source="history")
        finally:
            history.close()

    def _open_socket(self) -> None:
        assert self._ctx.urls is not None
        self._ws = self._socket_factory(
            self._ctx.urls,
            on_frame=self._router.on_frame,
            on_up=lambda epoch: self._tell_self(SocketUp(epoch=epoch)),
            on_down=lambda reason: self._tell_self(SocketDown(reason=reason)),
            on_garbage=self._router.on_garbage,
        )
        if hasattr(self._ws, "on_frame_done"):  # set before SocketUp subscribes anything
            self._ws.on_frame_done = self._router.on_frame_done
            self._router.bursts = True

    def _tell_self(self, message: Message) -> None:
        try:
            self.actor_ref.tell(message)
        except pykka.ActorDeadError:
            pass

    # --- socket events --------------------------------------------------------------------

    def _on_up(self, msg: SocketUp) -> None:
        ws = self._ws
        if ws is None or msg.epoch != ws.epoch:
            return  # an older connection; a newer SocketUp follows
        self._epoch_seen = msg.epoch
        self._connections += 1
        topics = list(self._desired.topics())
        sent = bool(topics) and ws.send_op("subscribe", topics)
        self._connected = True
        self._log.info("ws.subscribed", topics=topics, connection=self._connections, sent=sent)
        self._status(True)

    def _on_down(self, msg: SocketDown) -> None:
        self._router.on_burst_end()  # the burst ended with the connection
        self._connected = False
        self._log.warning("ws.disconnected", reason=msg.reason)
        self._status(False, msg.reason)

    def _on_check(self, _msg: CheckSocket) -> None:
        if self._router.retired:
            return  # replaced: this generation opens no new socket
        if time.monotonic() - self._stats_at >= self._stats_every:
            self._stats_at = time.monotonic()
            # The router's counts: frames it refused never reach the StateStore's health.
            self._log.info("ws.public_stats", connected=self._connected, **dict(self._router.counts),
                           state_inbox_queued=self._router.state_inbox_queued,
                           state_inbox_dropped=self._router.state_inbox_dropped)
        ws = self._ws
        if ws is not None and (ws.is_connected() or ws.reconnecting):
            self._dead_checks = 0
            return
        # Not connected and nobody reconnecting (twice in a row, so a reconnect that is just
        # starting is not mistaken for one): pybit's thread ended without telling us.
        self._dead_checks += 1
        if ws is not None and self._dead_checks < 2:
            return
        self._dead_checks = 0
        self._connected = False
        self._log.error("ws.socket_dead", action="rebuild")
        self._status(False, "socket dead, rebuilding")
        if ws is not None:
            ws.close()
        try:
            self._open_socket()
        except Exception as exc:  # noqa: BLE001 - stay alive; the next check tries again
            self._ws = None
            self._log.error("ws.rebuild_failed", error=repr(exc))

    def _status(self, connected: bool, reason: str = "") -> None:
        self._ctx.directory.tell(Role.STATE_STORE, SocketStatus(
            socket="public", generation=self._ctx.generation, connected=connected,
            topics=self._desired.topics(), reason=reason,
        ))

    # --- desired set -------------------------------------------------------------------------

    def _forward_to_supervisor(self, msg: Subscribe | Unsubscribe) -> None:
        # The desired set is the Supervisor's: it changes there first, then comes back here.
        if self._ctx.supervisor is not None:
            self._ctx.supervisor.tell(msg)
        else:
            new = self._desired.subscribe(msg) if isinstance(msg, Subscribe) else self._desired.unsubscribe(msg)
            self._on_desired(new)

    def _on_desired(self, desired: DesiredSubscriptions) -> None:
        old, new = set(self._desired.topics()), set(desired.topics())
        added = [t for t in desired.topics() if t not in old]
        removed = [t for t in self._desired.topics() if t not in new]
        self._desired = desired
        router = self._router
        router.topics = frozenset(old | new)  # frames of new topics may come before the ack
        router.removed = (router.removed | set(removed)) - new
        ws = self._ws
        live = ws is not None and self._connected and ws.epoch == self._epoch_seen
        if live:
            # Otherwise the next SocketUp sends the whole new set.
            if added:
                ws.send_op("subscribe", added)
            if removed:
                ws.send_op("unsubscribe", removed)
        router.topics = frozenset(new)
        self._log.info("ws.subscriptions_applied", added=added, removed=removed, live=live)
        self._status(self._connected)

    # --- public seam ---------------------------------------------------------------------------

    def _on_gap(self, gap: BarGap) -> None:
        kline = gap.kline
        start = next_open_ms(kline.interval, gap.after_ms)
        end = utc_to_ms(kline.start) - 1
        found: dict[int, ClosedBar] = {}
        try:
            self._fetch_missing(kline.symbol, kline.interval, start, end, found)
        except Exception as exc:  # noqa: BLE001 - a raising handler would kill the actor
            self._log.error("ws.seam_heal_failed", symbol=kline.symbol, interval=kline.interval,
                            from_ms=start, to_ms=end, fetched=len(found), error=repr(exc))
        bars = [found[k] for k in sorted(found)]  # what was fetched is kept, even after a failure
        for bar in bars:
            self._router.deliver(Role.DB_WRITER, bar)
            self._router.deliver(Role.STATE_STORE, bar)
        if bars:
            self._log.info("ws.seam_healed", symbol=kline.symbol, interval=kline.interval, bars=len(bars),
                           from_ms=bars[0].open_ms, to_ms=bars[-1].open_ms)
        self._router.deliver(Role.STATE_STORE, kline)
        self._router.unpark((kline.symbol, kline.interval))
        # Queued behind the router's earlier frames (the inbox keeps their order); no frame of
        # this thread ends a burst, so wake the StateStore now.
        self._router.on_burst_end()

    def _on_parked(self, msg: Parked) -> None:
        """An update that arrived while its series' seam was being healed, now behind it."""
        self._router.deliver(Role.STATE_STORE, msg.kline)
        self._router.unpark((msg.kline.symbol, msg.kline.interval))
        self._router.on_burst_end()

    def _fetch_missing(self, symbol: str, interval: str, start: int, end: int, found: dict[int, ClosedBar]) -> None:
        """Closed bars with open time in [start, end] into `found` (by open ms), paging backwards.

        Bounded in time: this runs on the actor's thread, and a handler that blocks past the
        Supervisor's heartbeat timeout gets the actor replaced. What is not fetched in time is
        logged (`ws.seam_heal_failed`) for `python main.py heal` or the next start's catch-up."""
        gateway = self._ctx.gateway
        if gateway is None:
            raise RuntimeError("no gateway: the node was started without REST access")
        budget = min(HEAL_BUDGET_MAX_S, float(self._ctx.config.node.supervisor.heartbeat_timeout_s) / 3)
        deadline = time.monotonic() + budget
        page_end = end
        while page_end >= start:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"seam not healed within {budget:.1f}s; bars from {start} to {page_end} missing")
            for attempt in Retrying(stop=stop_after_attempt(HEAL_ATTEMPTS) | stop_after_delay(left),
                                    wait=wait_exponential(0.2, max=2), reraise=True):
                with attempt:
                    page = gateway.fetch_klines(symbol, interval, start, page_end, limit=KLINE_PAGE)
            inside = [b for b in page if start <= b.open_ms <= end]
            for bar in inside:
                found[bar.open_ms] = bar
            if len(page) < KLINE_PAGE or not inside:
                break
            page_end = min(b.open_ms for b in inside) - 1
