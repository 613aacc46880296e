"""StateStore: the single owner of live market and account state, and of its health.

`LiveState` holds the logic and is tested without threads (its clock is
injected); `StateStore` binds it to a mailbox. Readers ask for a
`StateSnapshot`, a `HealthReport` or one `TickerView`, all immutable.

Health (DATA-009, DATA-011, DATA-012). Every stream has a last-data age, a
frame count and a rejection count. A public stream (`tickers.X`,
`kline.I.X`) is stale when it delivered nothing for longer than
`supervisor.public_stale_after_s`; one that never delivered is not fresh
either. Private topics (order, execution, position, wallet) push only when
something happens on the account, so their silence says nothing: they are
shown, never judged. What is judged is the private *socket* (stream
`private`): every frame it delivers counts, pongs to pybit's 20 s JSON ping
and acks included (`PrivatePulse`), so a live socket is never quiet for
`private_stale_after_s` (60 s by default) and a half-open one is.

`ready` (the trading gate) is true only when the wallet and positions were
seeded over REST, the private socket is up, not stale and its latest
(re)connect was followed by a REST reseed (the seam is healed), and every
subscribed public stream (the topics of the latest public `SocketStatus`,
the configured set until one arrives) is fresh. Pykka has no timers, so a
daemon thread tells `CheckHealth` every `supervisor.check_interval_s`; a
flip of `ready` is told to Panic (`ReadinessChanged`), which owns the
trading state.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from datetime import datetime
from types import MappingProxyType
from typing import Any, Callable, Iterable

from actors.base import NodeActor, Role
from messages.account import AccountReseed, Execution, Order, OrderStatus, Position, PrivatePulse, Wallet
from messages.control import FrameRejected, NodeStopping, ReadinessChanged, SocketStatus
from messages.market import ClosedBar, Kline, MarketDataPending, Ticker
from messages.queries import (
    BarKey,
    CheckHealth,
    GetHealth,
    GetSnapshot,
    GetTicker,
    HealthReport,
    StateSnapshot,
    StreamHealth,
    TickerView,
)
from messages.trading import GetTradingView, PortfolioSnapshot, TradingView

PRIVATE = "private"  # the private socket's own liveness stream
PRIVATE_TOPICS = ("order", "execution", "position", "wallet")
_TOMBSTONES_KEPT = 10_000
# How long one market-data drain (StateStore._on_market_pending) may hold the actor before the
# mailbox gets a turn.
INGEST_BUDGET_S = 0.005


def configured_public_topics(symbols: dict[str, Any]) -> tuple[str, ...]:
    """The public topics `config.node.symbols` asks for (the desired set before any SocketStatus)."""
    out: list[str] = []
    for symbol, cfg in symbols.items():
        if cfg.tickers:
            out.append(f"tickers.{symbol}")
        out += [f"kline.{i}.{symbol}" for i in cfg.intervals]
    return tuple(out)


class LiveState:
    """Plain state logic; every method is called on the StateStore's thread."""

    def __init__(
        self,
        bar_buffer_len: int = 1000,
        executions_kept: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        public_stale_after_s: float = 30.0,
        private_stale_after_s: float = 60.0,
        public_topics: Iterable[str] = (),
    ):
        self._bar_buffer_len = bar_buffer_len
        # What may arrive one by one as a tell or batched through the socket's inbox (on_market):
        # the StateStore actor's handlers include these same ones.
        self.market_handlers: dict[type, Callable[[Any], Any]] = {
            Ticker: self.on_ticker, Kline: self.on_kline, ClosedBar: self.on_closed_bar,
            FrameRejected: self.on_frame_rejected,
        }
        self._clock = clock
        self._public_stale_after_s = public_stale_after_s
        self._private_stale_after_s = private_stale_after_s
        self.tickers: dict[str, Ticker] = {}
        self.klines: dict[BarKey, Kline] = {}
        self.bars: dict[BarKey, deque[ClosedBar]] = {}
        self.wallet: Wallet | None = None
        self.positions: dict[tuple[str, int], Position] = {}
        self.open_orders: dict[str, Order] = {}
        # Fills and the other executions apart; one set of ids for both (a duplicate is a duplicate).
        self._fills: OrderedDict[str, Execution] = OrderedDict()
        self._other: OrderedDict[str, Execution] = OrderedDict()
        self._exec_ids: OrderedDict[str, None] = OrderedDict()
        self._executions_kept = executions_kept
        # Orders that left the open set, so a late frame or an older REST answer cannot bring them
        # back: order id -> (time it closed, final). `Triggered` is not final: the venue turns a
        # triggered conditional into a `New` order of the same id (REFERENCE.md orderStatus).
        self._closed_orders: OrderedDict[str, tuple[datetime, bool]] = OrderedDict()
        self.received_at: dict[str, float] = {}
        self.frames: dict[str, int] = {}
        self.rejected: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        # Health inputs.
        self._public_topics: tuple[str, ...] = tuple(public_topics)
        self._public_reported = False
        self.socket_up: dict[str, bool | None] = {"public": None, PRIVATE: None}
        self.socket_reason: dict[str, str] = {}
        self.wallet_seeded = False
        self.positions_seeded = False
        self.seam_healed = False
        self.reseeds = 0
        self.pulses = 0  # private frames that are not account data: pongs, acks
        self._generation: dict[str, int] = {}  # socket -> newest actor generation heard from

    # --- bookkeeping ---------------------------------------------------------

    def _touch(self, stream: str) -> None:
        self.received_at[stream] = self._clock()
        self.frames[stream] = self.frames.get(stream, 0) + 1

    def on_frame_rejected(self, msg: FrameRejected) -> None:
        """A frame a socket's router refused (malformed, unknown topic): charged to its stream."""
        self._reject(msg.stream, "frame_rejected")

    def _reject(self, stream: str, reason: str) -> None:
        self.rejected[stream] = self.rejected.get(stream, 0) + 1
        self._drop(reason)

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def _private_alive(self) -> None:
        self.received_at[PRIVATE] = self._clock()

    # --- market --------------------------------------------------------------

    def on_ticker(self, msg: Ticker) -> bool:
        stream = f"tickers.{msg.symbol}"
        current = self.tickers.get(msg.symbol)
        if msg.is_snapshot:
            self.tickers[msg.symbol] = msg
        elif current is None:
            self._reject(stream, "ticker_delta_without_snapshot")
            return False
        else:
            self.tickers[msg.symbol] = current.merge(msg)
        self._touch(stream)
        return True

    def on_market(self, items: Iterable[Ticker | Kline | ClosedBar]) -> None:
        """A batch of market messages in arrival order (the StateStore's drain of the socket's inbox).

        The state ends exactly as if each had gone to its own handler (`on_ticker`, ...), with
        the same counts and rejections; but a run of ticker deltas of one symbol is folded into
        one dict of changes and copied into the ticker once per batch, not once per delta.
        """
        tickers = self.tickers
        folded: dict[str, dict[str, Any]] = {}  # symbol -> changes not yet copied into its ticker
        touched: dict[str, int] = {}  # ticker stream -> merged messages
        for msg in items:
            if type(msg) is not Ticker:
                self.market_handlers[type(msg)](msg)
                continue
            symbol = msg.symbol
            if msg.is_snapshot:
                folded.pop(symbol, None)  # replaced whole: earlier deltas no longer matter
                tickers[symbol] = msg
            elif symbol in folded:
                folded[symbol].update(msg.changes())
            elif symbol in tickers:
                folded[symbol] = msg.changes()
            else:
                self._reject(f"tickers.{symbol}", "ticker_delta_without_snapshot")
                continue
            touched[symbol] = touched.get(symbol, 0) + 1
        for symbol, changes in folded.items():
            tickers[symbol] = tickers[symbol].model_copy(update=changes)
        if touched:
            now = self._clock()
            for symbol, n in touched.items():
                stream = f"tickers.{symbol}"
                self.received_at[stream] = now
                self.frames[stream] = self.frames.get(stream, 0) + n

    def on_kline(self, msg: Kline) -> None:
        key = (msg.symbol, msg.interval)
        current = self.klines.get(key)
        if current is None or msg.start >= current.start:
            self.klines[key] = msg
        if msg.confirm:
            self.on_closed_bar(msg.closed_bar())
        self._touch(f"kline.{msg.interval}.{msg.symbol}")

    def on_closed_bar(self, bar: ClosedBar) -> bool:
        """Append in time order; a repeated bar replaces its twin, an older one is ignored."""
        key = (bar.symbol, bar.interval)
        buf = self.bars.get(key)
        if buf is None:
            # One configured size for every key (DATA-008: no silent default).
            buf = self.bars[key] = deque(maxlen=self._bar_buffer_len)
        if buf and bar.open_time <= buf[-1].open_time:
            if bar.open_time == buf[-1].open_time:
                buf[-1] = bar
                return True
            self._drop("bar_out_of_order")
            return False
        buf.append(bar)
        return True

    # --- account -------------------------------------------------------------

    def on_wallet(self, msg: Wallet) -> None:
        self._apply_wallet(msg)
        self._touch("wallet")
        self._private_alive()

    def _apply_wallet(self, msg: Wallet) -> None:
        if self.wallet is None or msg.ts >= self.wallet.ts:
            self.wallet = msg

    def on_position(self, msg: Position) -> None:
        self._private_alive()
        if not self._apply_position(msg):
            self._reject("position", "position_out_of_order")
            return
        self._touch("position")

    def _apply_position(self, msg: Position, not_before: datetime | None = None) -> bool:
        key = (msg.symbol, msg.position_idx)
        current = self.positions.get(key)
        if current is not None:
            if current.seq is not None and msg.seq is not None:
                if msg.seq < current.seq:
                    return False
            elif not_before is not None and current.updated_time is not None and current.updated_time > not_before:
                return False  # streamed after the REST read was sent: newer than the answer
        self.positions[key] = msg
        return True

    def on_order(self, msg: Order) -> None:
        self._private_alive()
        if not self._is_order_news(msg):
            self._reject("order", "order_out_of_order")
            return
        if msg.order_status.is_open:
            self.open_orders[msg.order_id] = msg
        else:
            self.open_orders.pop(msg.order_id, None)
            final = msg.order_status is not OrderStatus.TRIGGERED
            self._closed_orders[msg.order_id] = (_order_time(msg), final)
            self._closed_orders.move_to_end(msg.order_id)
            while len(self._closed_orders) > _TOMBSTONES_KEPT:
                self._closed_orders.popitem(last=False)
        self._touch("order")

    def _is_order_news(self, msg: Order) -> bool:
        """False for an update older than what is known of the order (a late 'New' after its
        'Filled', an older partial fill after a newer one): applying it would regress the order,
        or bring a closed one back as a phantom resting order. Updates of one ms all apply."""
        at = _order_time(msg)
        closed = self._closed_orders.get(msg.order_id)
        if closed is not None:
            closed_at, final = closed
            if at < closed_at or (final and msg.order_status.is_open):
                return False
        current = self.open_orders.get(msg.order_id)
        return current is None or at >= _order_time(current)

    def on_execution(self, msg: Execution) -> bool:
        """Record an execution once (the venue may push one twice); fills apart from the rest."""
        self._private_alive()
        self._touch("execution")
        return self._record_execution(msg)

    def _record_execution(self, msg: Execution) -> bool:
        if msg.exec_id in self._exec_ids:
            self._drop("duplicate_execution")
            return False
        self._exec_ids[msg.exec_id] = None
        kept = self._fills if msg.is_trade else self._other
        kept[msg.exec_id] = msg
        for d in (self._exec_ids, self._fills, self._other):
            while len(d) > self._executions_kept:
                d.popitem(last=False)
        return True

    def on_private_pulse(self, _msg: PrivatePulse) -> None:
        self.pulses += 1
        self._private_alive()

    def _current(self, socket: str, generation: int) -> bool:
        """False for a message of a replaced (older) socket actor: it must not undo its successor's state."""
        latest = self._generation.get(socket, -1)
        if generation < latest:
            self._drop(f"{socket}_old_generation")
            return False
        self._generation[socket] = generation
        return True

    def on_reseed(self, msg: AccountReseed) -> dict[str, int] | None:
        """Fold a REST reseed in; a streamed update newer than the REST read wins."""
        if not self._current(PRIVATE, msg.generation):
            return None
        self._apply_wallet(msg.wallet)
        self.wallet_seeded = True
        positions_kept = 0
        for row in msg.positions:
            if not self._apply_position(row, not_before=msg.requested_at):
                positions_kept += 1
        self.positions_seeded = True
        rest_open = {o.order_id: o for o in msg.open_orders}
        for order_id, order in rest_open.items():
            closed = self._closed_orders.get(order_id)
            if closed is not None and (closed[1] or _order_time(order) < closed[0]):
                continue  # closed on the stream after the REST read (a triggered one comes back New)
            current = self.open_orders.get(order_id)
            if current is not None and (current.updated_time or current.created_time) > (order.updated_time or order.created_time):
                continue
            self.open_orders[order_id] = order
        gone = [
            oid for oid, o in self.open_orders.items()
            if oid not in rest_open and (o.updated_time or o.created_time) < msg.requested_at
        ]
        for oid in gone:
            del self.open_orders[oid]
        new_fills = new_other = 0
        for ex in sorted(msg.executions, key=lambda e: e.exec_time):
            if self._record_execution(ex):
                if ex.is_trade:
                    new_fills += 1
                else:
                    new_other += 1
        if self.socket_up[PRIVATE]:
            self.seam_healed = True
        self.reseeds += 1
        return {"new_fills": new_fills, "new_other_executions": new_other, "orders_closed": len(gone),
                "positions_kept_from_stream": positions_kept}

    # --- sockets -------------------------------------------------------------

    def on_socket_status(self, msg: SocketStatus) -> None:
        if not self._current(msg.socket, msg.generation):
            return
        self.socket_up[msg.socket] = msg.connected
        self.socket_reason[msg.socket] = msg.reason
        if msg.socket == "public":
            self._public_reported = True
            self._public_topics = tuple(msg.topics)
        elif msg.connected:
            # A new connection is a new seam: closed until its reseed arrives.
            self.seam_healed = False
            self._private_alive()
        else:
            self.seam_healed = False

    # --- health --------------------------------------------------------------

    @property
    def public_topics(self) -> tuple[str, ...]:
        return self._public_topics

    def _age(self, stream: str, now: float) -> float | None:
        seen = self.received_at.get(stream)
        return None if seen is None else max(0.0, now - seen)

    def health(self) -> HealthReport:
        now = self._clock()
        streams: dict[str, StreamHealth] = {}
        reasons: list[str] = []
        stale: list[str] = []
        if not self.wallet_seeded:
            reasons.append("wallet not seeded")
        if not self.positions_seeded:
            reasons.append("positions not seeded")

        priv_up = bool(self.socket_up[PRIVATE])
        priv_age = self._age(PRIVATE, now)
        priv_stale = priv_age is None or priv_age > self._private_stale_after_s
        streams[PRIVATE] = StreamHealth(connected=priv_up, age_s=priv_age, stale=priv_stale,
                                        frames=self.pulses + sum(self.frames.get(t, 0) for t in PRIVATE_TOPICS),
                                        rejected=sum(self.rejected.get(t, 0) for t in (PRIVATE, *PRIVATE_TOPICS)))
        if not priv_up:
            why = self.socket_reason.get(PRIVATE)
            reasons.append(f"private socket down ({why})" if why else "private socket down")
        else:
            if priv_stale:
                reasons.append(f"private socket stale (nothing for {_fmt(priv_age)})")
                stale.append(PRIVATE)
            if not self.seam_healed:
                reasons.append("private seam not healed (REST reseed pending)")
        for topic in PRIVATE_TOPICS:
            streams[topic] = StreamHealth(connected=priv_up, age_s=self._age(topic, now), stale=False,
                                          frames=self.frames.get(topic, 0), rejected=self.rejected.get(topic, 0),
                                          watched=False)

        pub_up = self.socket_up["public"]
        if pub_up is False:
            why = self.socket_reason.get("public")
            reasons.append(f"public socket down ({why})" if why else "public socket down")
        # The socket as a whole, like `private`: what it refused without a topic to charge (not
        # JSON, not UTF-8, a topic nobody subscribed to) shows here with the topics' refusals.
        # Its staleness is judged per topic below, so it is shown, never counted toward `ready`.
        ages = {t: self._age(t, now) for t in self._public_topics}
        seen = [a for a in ages.values() if a is not None]
        streams["public"] = StreamHealth(
            connected=bool(pub_up), age_s=min(seen) if seen else None, stale=False,
            frames=sum(self.frames.get(t, 0) for t in self._public_topics),
            rejected=self.rejected.get("public", 0) + sum(self.rejected.get(t, 0) for t in self._public_topics),
            watched=False)
        for topic, age in ages.items():
            is_stale = age is None or age > self._public_stale_after_s
            streams[topic] = StreamHealth(connected=pub_up if pub_up is not None else not is_stale, age_s=age,
                                          stale=is_stale, frames=self.frames.get(topic, 0),
                                          rejected=self.rejected.get(topic, 0))
            if age is None:
                reasons.append(f"{topic} no data yet")
            elif is_stale:
                reasons.append(f"{topic} stale (nothing for {_fmt(age)})")
                stale.append(topic)
        if not self._public_topics:
            reasons.append("no public stream subscribed")
        return HealthReport(
            ready=not reasons,
            reasons=tuple(reasons),
            streams=MappingProxyType(streams),
            wallet_seeded=self.wallet_seeded,
            positions_seeded=self.positions_seeded,
            private_seam_healed=self.seam_healed,
            stale_streams=tuple(stale),
        )

    def ticker_view(self, symbol: str) -> TickerView:
        return TickerView(ticker=self.tickers.get(symbol), age_s=self._age(f"tickers.{symbol}", self._clock()))

    def trading_view(self, symbol: str) -> TradingView:
        return TradingView(portfolio=PortfolioSnapshot.of(self.wallet, self.positions.values()),
                           ticker=self.ticker_view(symbol))

    def snapshot(self) -> StateSnapshot:
        return StateSnapshot(
            tickers=MappingProxyType(dict(self.tickers)),
            klines=MappingProxyType(dict(self.klines)),
            bars=MappingProxyType({k: tuple(v) for k, v in self.bars.items()}),
            wallet=self.wallet,
            positions=MappingProxyType(dict(self.positions)),
            open_orders=MappingProxyType(dict(self.open_orders)),
            recent_executions=tuple(self._fills.values()),
            received_at=MappingProxyType(dict(self.received_at)),
            taken_at=self._clock(),
            other_executions=tuple(self._other.values()),
            ready=self.health().ready,
        )


def _order_time(order: Order) -> datetime:
    return order.updated_time or order.created_time


def _fmt(age: float | None) -> str:
    return "ever" if age is None else f"{age:.1f}s"


class ReadinessWatch:
    """Remembers what was last said about `ready` and each stream, so only changes are told and logged."""

    def __init__(self, log: Any):
        self._log = log
        # None: nothing said yet. The first check is always told, so a restarted StateStore
        # closes the gate Panic may still hold open from its predecessor.
        self.ready: bool | None = None
        self._stale: set[str] = set()
        # Set when the node's orderly stop begins (NodeStopping): the sockets going down next are
        # the stop itself, said at info, not the warnings a fault would deserve.
        self.stopping = False

    def check(self, report: HealthReport) -> ReadinessChanged | None:
        now_stale = set(report.stale_streams)
        worry = self._log.info if self.stopping else self._log.warning
        for stream in sorted(now_stale - self._stale):
            h = report.streams.get(stream)
            worry("state.stream_stale", stream=stream, age_s=_round(h.age_s if h else None))
        for stream in sorted(self._stale - now_stale):
            h = report.streams.get(stream)
            self._log.info("state.stream_fresh", stream=stream, age_s=_round(h.age_s if h else None))
        self._stale = now_stale
        if report.ready == self.ready:
            return None
        first = self.ready is None
        self.ready = report.ready
        if report.ready:
            self._log.info("state.ready")
        elif not first:  # not ready at start is the normal beginning, not news
            worry("state.not_ready", reasons=list(report.reasons), node_stopping=self.stopping)
        return ReadinessChanged(ready=report.ready, reasons=report.reasons, stale_streams=report.stale_streams)


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


class StateStore(NodeActor):
    role = Role.STATE_STORE

    def __init__(self, ctx, clock: Callable[[], float] = time.monotonic):
        node = ctx.config.node
        self._state = LiveState(
            bar_buffer_len=node.state.bar_buffer_len,
            clock=clock,
            public_stale_after_s=float(node.supervisor.public_stale_after_s),
            private_stale_after_s=float(node.supervisor.private_stale_after_s),
            public_topics=configured_public_topics(node.symbols),
        )
        super().__init__(ctx)
        self._watch = ReadinessWatch(self._log)
        self._check_every_s = float(node.supervisor.check_interval_s)

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        s = self._state
        return {
            **s.market_handlers,
            MarketDataPending: self._on_market_pending,
            Wallet: s.on_wallet,
            Position: s.on_position,
            Order: s.on_order,
            Execution: self._on_execution,
            PrivatePulse: s.on_private_pulse,
            AccountReseed: self._on_reseed,
            SocketStatus: self._on_socket_status,
            CheckHealth: lambda _: self._check(),
            NodeStopping: self._on_node_stopping,
            GetSnapshot: lambda _: s.snapshot(),
            GetHealth: lambda _: s.health(),
            GetTicker: lambda m: s.ticker_view(m.symbol),
            GetTradingView: lambda m: s.trading_view(m.symbol),
        }

    def on_start(self) -> None:
        self._check()
        # Staleness needs a clock: the Repeater tells CheckHealth every check interval.
        self.every(self._check_every_s, CheckHealth, name="state-health-ticker")
        super().on_start()

    def _on_market_pending(self, msg: MarketDataPending) -> None:
        """Merge what the socket side queued (actors/inbox.py), batch after batch, until none is left.

        After `INGEST_BUDGET_S` the drain is told to this actor again (the inbox still counts
        it outstanding, so nothing is stranded) and asks waiting in the mailbox are answered
        first: a flood never starves them.
        """
        inbox = msg.inbox
        until = time.monotonic() + INGEST_BUDGET_S
        while items := inbox.take():
            self._merge_market(items)
            if time.monotonic() >= until:
                self.actor_ref.tell(msg)
                return

    def _merge_market(self, items: tuple[Any, ...]) -> None:
        self._state.on_market(items)

    def _on_execution(self, msg: Execution) -> None:
        if self._state.on_execution(msg) and not msg.is_trade:
            self._log.info("state.account_execution", exec_type=msg.exec_type, symbol=msg.symbol,
                           exec_id=msg.exec_id, fee=str(msg.exec_fee))

    def _on_reseed(self, msg: AccountReseed) -> None:
        counts = self._state.on_reseed(msg)
        if counts is None:
            return
        self._log.info("state.reseeded", positions=len(msg.positions), open_orders=len(msg.open_orders),
                       executions=len(msg.executions), seam_healed=self._state.seam_healed, **counts)
        self._check()

    def _on_socket_status(self, msg: SocketStatus) -> None:
        self._state.on_socket_status(msg)
        self._check()

    def _on_node_stopping(self, _msg: NodeStopping) -> None:
        self._watch.stopping = True

    def _check(self) -> None:
        change = self._watch.check(self._state.health())
        if change is not None:
            self._ctx.directory.tell(Role.PANIC, change)
