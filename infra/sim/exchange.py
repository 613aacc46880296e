"""The venue: its parts, its thread, and its clock-driven life.

`Exchange` puts the parts together (market models, WebSocket sessions,
market feed, account, fault switches) and is the only thing that moves
time. Everything here runs on one thread (the simulator's event loop), so
there are no locks; other threads get in only through `call`, which runs a
function on the loop and waits for it. Time moves only through
`advance_to`, which walks minute by minute (and, where orders wait for a
price, path knot by path knot) so that bars close, funding settles, stops
trigger and DCP fires in time order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from decimal import Decimal
from typing import Any, Callable

from aiohttp import web

from infra.sim import dcp, funding, triggers
from infra.sim.account import Account
from infra.sim.clock import Clock
from infra.sim.faults import Faults
from infra.sim.ids import IdSource
from infra.sim.instruments import LISTED, UnlistedSymbol, instrument_for
from infra.sim.market import FUNDING_MS, MIN_MS, Hole, SymbolModel
from infra.sim.market_feed import MarketFeed
from infra.sim.ratelimit import EndpointLimiter, IpLimiter
from infra.sim.sessions import Sessions
from infra.sim.ws import DCP_TOPICS, PUBLIC, Conn
from messages.types import INTERVALS

WALL_TICK_S = 0.1  # wall-clock mode: how often time is processed and tickers pushed
KLINE_PUSH_MS = 1_000  # wall-clock mode: running kline update period


class Exchange:
    def __init__(
        self,
        symbols: list[str],
        seed: int,
        api_key: str,
        api_secret: str,
        clock: Clock,
        dcp_available: bool,
        starting_balance_usdt: Decimal,
        ack_delay_s: float = 0.03,
        ip_limiter: IpLimiter | None = None,
    ):
        # Every listed instrument is served, like the venue; `symbols` (what the client is
        # configured for, each one listed) only come first. Models are lazy: an unused one costs nothing.
        listed = [*dict.fromkeys([*symbols, *LISTED])]
        for s in symbols:
            if s not in LISTED:
                raise UnlistedSymbol(s)
        symbols = listed
        self.clock = clock
        self.seed = seed
        self.ids = IdSource(seed)
        self.models: dict[str, SymbolModel] = {s: SymbolModel(instrument_for(s, seed), seed) for s in symbols}
        self.hole_by_symbol: dict[str, list[Hole]] = {s: [] for s in symbols}
        self.api_key = api_key
        self.keys = {api_key: api_secret}
        self.endpoint_limiter = EndpointLimiter()
        self.ip_limiter = ip_limiter if ip_limiter is not None else IpLimiter()
        self.faults = Faults(self)
        self.sessions = Sessions(self.ids, symbols, self.keys, self.faults, clock, ack_delay_s,
                                 on_subscribed=self._on_subscribed, on_private_gone=self._on_private_gone)
        self.feed = MarketFeed(self.models, self.sessions.subs)
        self.account = Account(self.models, self.ids, self.faults, self.sessions.push_private,
                               dcp_available=dcp_available, starting_balance=starting_balance_usdt)
        self._kline_pushed_at = 0
        self.processed_ms = clock.now_ms()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    # --- threads --------------------------------------------------------------------

    def bind_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop
        self._loop_thread = threading.get_ident() if loop is not None else None

    def call(self, fn: Callable[[], Any], timeout: float = 60.0) -> Any:
        """Run `fn` on the loop thread and return its result (directly if already there)."""
        loop = self.loop
        if loop is None or threading.get_ident() == self._loop_thread:
            return fn()
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                fut.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return fut.result(timeout)

    def now(self) -> int:
        return self.clock.now_ms()

    # --- wiring --------------------------------------------------------------------------

    def connections(self, kinds: tuple[str, ...]) -> list[Conn]:
        """The open WebSockets of these kinds (tests inspect them through `Simulator.call`)."""
        return self.sessions.connections(kinds)

    def _on_subscribed(self, conn: Conn, topics: list[str]) -> None:
        now = self.now()
        for topic in topics:
            if topic in DCP_TOPICS:
                dcp.on_dcp_subscribed(self.account, conn)
            elif conn.kind == PUBLIC:
                self.feed.send_snapshot(conn, topic, now)

    def _on_private_gone(self, conn: Conn) -> None:
        dcp.on_private_gone(self.account, conn, self.now())

    # --- time --------------------------------------------------------------------------------

    def advance_to(self, target: int, set_clock: bool) -> None:
        """Process time up to `target`: triggers along the path, bar closes, funding, DCP."""
        t = self.processed_ms
        while t < target:
            nxt = min(target, (t // MIN_MS + 1) * MIN_MS)
            due = dcp.dcp_due(self.account)
            if due is not None and t < due < nxt:
                nxt = due
            triggers.on_path(self.account, t, nxt)
            t = nxt
            if set_clock:
                self.clock._set(t)  # type: ignore[attr-defined]
            self.processed_ms = t
            if t % MIN_MS == 0:
                self.feed.close_bars(t)
                if t % FUNDING_MS == 0:
                    funding.settle_funding(self.account, t)
            dcp.check_dcp(self.account, t)
        if set_clock:
            self.feed.publish(target)

    def wall_tick(self) -> None:
        now = self.now()
        if now <= self.processed_ms:
            return
        self.advance_to(now, set_clock=False)
        klines = now - self._kline_pushed_at >= KLINE_PUSH_MS
        if klines:
            self._kline_pushed_at = now
        self.feed.publish(now, klines=klines)

    def set_price(self, symbol: str, price: Decimal) -> None:
        model = self.models[symbol]
        if not getattr(self.clock, "manual", False):
            self.advance_to(self.now(), set_clock=False)
        t = self.processed_ms if getattr(self.clock, "manual", False) else self.now()
        ticks = model.inst.to_ticks(price)
        if ticks <= 0:
            raise ValueError("price must be positive")
        before = model.last_ticks(t)
        model.shock(t, ticks)
        self.feed.forget_stats(symbol)
        triggers.on_jump(self.account, symbol, t, before, ticks)
        self.feed.publish(t)

    def add_hole(self, symbol: str, start_ms: int, end_ms: int, interval: str | None) -> None:
        if symbol not in self.models:
            raise ValueError(f"unknown symbol {symbol}")
        if interval is not None and interval not in INTERVALS:
            raise ValueError(f"unknown interval {interval}")
        if end_ms < start_ms:
            raise ValueError("end_ms must not be before start_ms")
        self.hole_by_symbol[symbol].append(Hole(int(start_ms), int(end_ms), interval))


EXCHANGE = web.AppKey("exchange", Exchange)
