"""`Simulator`: the loopback Bybit V5 venue in a background thread.

    sim = Simulator(symbols=["BTCUSDT"], seed=7, api_key="k", api_secret="s", clock=ManualClock())
    urls = sim.start()          # listening on 127.0.0.1 when this returns
    sim.clock.advance(60)       # a bar closes; returns when processed
    sim.set_price("BTCUSDT", Decimal("60000"))
    sim.faults.drop_sockets()
    sim.stop()

The server is aiohttp (HTTP and WebSocket on one port) on its own event
loop. Every call from another thread is marshalled onto that loop and
returns only once its effect is visible to clients.
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from decimal import Decimal
from typing import Any

from aiohttp import web

from infra.bybit.clients import VenueUrls, simulator_urls
from infra.logging import get_logger
from infra.sim.clock import Clock, ManualClock, WallClock
from infra.sim.exchange import EXCHANGE, WALL_TICK_S, Exchange
from infra.sim.faults import Faults
from infra.sim.instruments import LISTED
from infra.sim.ratelimit import IpLimiter
from infra.sim import rest, ws

log = get_logger("sim")


class _Refuse(asyncio.Protocol):
    """What a refused connection looks like to a client: cut before a byte is exchanged."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.abort()  # type: ignore[attr-defined]


class Simulator:
    def __init__(
        self,
        symbols: list[str] | tuple[str, ...] = ("BTCUSDT",),
        seed: int = 7,
        api_key: str = "sim-api-key",
        api_secret: str = "sim-api-secret",
        clock: Clock | None = None,
        dcp_available: bool = True,
        starting_balance_usdt: Decimal | str | int = Decimal("10000"),
        port: int = 0,
        host: str = "127.0.0.1",
        ack_delay_s: float = 0.03,
        ip_limit_per_5s: int = 600,
        ip_ban_s: float = 600.0,
    ):
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the simulator binds loopback addresses only (got {host})")
        self.clock: Any = clock if clock is not None else WallClock()
        self.host = host
        self.port = port
        self._configured = list(symbols)
        self._ex = Exchange(
            list(symbols), seed, api_key, api_secret, self.clock, dcp_available, Decimal(str(starting_balance_usdt)),
            ack_delay_s=ack_delay_s, ip_limiter=IpLimiter(limit=ip_limit_per_5s, ban_s=ip_ban_s),
        )
        self.faults: Faults = self._ex.faults
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._urls: VenueUrls | None = None

    @classmethod
    def from_config(cls, node_config: Any, clock: Clock | None = None) -> "Simulator":
        """From a `NodeConfig`: its `sim` section and its `symbols`."""
        sim = node_config.sim
        return cls(
            # An unlisted symbol is left to the node's own start-up check, which names it and
            # lists the close matches; the venue just does not serve it.
            symbols=[s for s in node_config.symbols if s in LISTED],
            seed=sim.seed,
            api_key=sim.api_key,
            api_secret=sim.api_secret,
            clock=clock,
            dcp_available=sim.dcp_available,
            starting_balance_usdt=sim.starting_balance_usdt,
            port=sim.port,
            ack_delay_s=sim.ws_ack_delay_ms / 1000,
            ip_limit_per_5s=sim.ip_limit_per_5s,
            ip_ban_s=float(sim.ip_ban_s),
        )

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def urls(self) -> VenueUrls:
        if self._urls is None:
            raise RuntimeError("the simulator is not running")
        return self._urls

    @property
    def symbols(self) -> list[str]:
        """The symbols it was started for (it serves every listed one: `listed`)."""
        return list(self._configured)

    @property
    def listed(self) -> list[str]:
        return list(self._ex.models)

    def start(self) -> VenueUrls:
        if self._thread is not None:
            raise RuntimeError("already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="bybit-sim", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure or self._urls is None:
            self._thread.join(5)
            self._thread = None
            raise RuntimeError(f"simulator failed to start: {failure[0]!r}" if failure else "simulator start timed out")
        if isinstance(self.clock, ManualClock):
            self.clock._attach(self._drive)
        log.info("sim.started", rest=self._urls.rest, ws_public=self._urls.ws_public, ws_private=self._urls.ws_private,
                 seed=self._ex.seed, symbols=self.symbols, clock="manual" if isinstance(self.clock, ManualClock) else "wall")
        return self._urls

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        self._ex.bind_loop(loop)
        self._ex.processed_ms = self.clock.now_ms()
        app = web.Application()
        app[EXCHANGE] = self._ex
        app.router.add_get("/v5/public/linear", ws.handle_public)
        app.router.add_get("/v5/private", ws.handle_private)
        app.router.add_post("/sim/fault/{name}", self._admin_fault)
        app.router.add_post("/sim/advance", self._admin_advance)
        app.router.add_post("/sim/price", self._admin_price)
        app.router.add_route("*", "/v5/{tail:.*}", rest.handle)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        handler = runner.server
        assert handler is not None
        faults = self._ex.faults

        def protocol() -> asyncio.BaseProtocol:
            return _Refuse() if faults.state.refuse.active() else handler()

        self._server = await loop.create_server(protocol, self.host, self.port, reuse_address=True)
        self._runner = runner
        port = self._server.sockets[0].getsockname()[1]
        self._urls = simulator_urls(f"http://{self.host}:{port}")
        if not isinstance(self.clock, ManualClock):
            self._ticker = loop.create_task(self._wall_ticks())

    async def _wall_ticks(self) -> None:
        while True:
            await asyncio.sleep(WALL_TICK_S)
            try:
                self._ex.wall_tick()
            except Exception as exc:  # noqa: BLE001 - one bad tick must not stop the venue
                log.error("sim.tick_failed", error=repr(exc))

    def stop(self) -> None:
        """Close every socket and join the server thread. Safe to call twice."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if isinstance(self.clock, ManualClock):
            self.clock._attach(None)
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(15)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(15)
            self._thread = None
            self._ex.bind_loop(None)
            log.info("sim.stopped")

    async def _shutdown(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for conn in list(self._ex.sessions.conns):
            conn.abort()
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()
        # Answers still held by a fault (delay, timeout) would otherwise be destroyed
        # pending when the loop stops, with asyncio's warning on stderr.
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    def __enter__(self) -> "Simulator":
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- test controls ------------------------------------------------------------------

    def _drive(self, target_ms: int) -> None:
        self._ex.call(lambda: self._ex.advance_to(target_ms, set_clock=True))

    def set_price(self, symbol: str, price: Decimal | str) -> None:
        """Move the market: last, mark, index, bid and ask jump to `price`; conditionals trigger."""
        self._ex.call(lambda: self._ex.set_price(symbol, Decimal(str(price))))

    def add_history_hole(self, symbol: str, start_ms: int, end_ms: int, interval: str | None = None) -> None:
        """The venue has no bars with open time in [start_ms, end_ms] (for `interval`, or every interval)."""
        self.faults.history_hole(symbol, start_ms, end_ms, interval)

    def set_withdrawal_permission(self, enabled: bool) -> None:
        """Give the API key (or take away) the Wallet "Withdraw" permission `user/query-api` reports."""
        self._ex.call(lambda: setattr(self._ex.account, "withdraw_permission", bool(enabled)))
        log.warning("sim.key.withdrawal_permission", enabled=bool(enabled))

    def order_log(self) -> list[dict[str, Any]]:
        """A copy of the venue's own order record: every order's creation and end, in order,
        with its position's size at that moment (see `Account.order_log`)."""
        return self._ex.call(lambda: [dict(e) for e in self._ex.account.order_log])

    def call(self, fn: Any) -> Any:
        """Run `fn(exchange)` on the simulator's loop (for inspection in tests)."""
        return self._ex.call(lambda: fn(self._ex))

    # --- admin endpoint (loopback only, like the whole server) ----------------------------

    async def _admin_fault(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            kwargs = await request.json() if request.can_read_body else {}
            result = self.faults.invoke(name, kwargs or {})
        except KeyError:
            return web.json_response({"ok": False, "error": f"no fault switch {name}", "switches": self.faults.names()},
                                     status=404)
        except (TypeError, ValueError) as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        return web.json_response({"ok": True, "result": result})

    async def _admin_advance(self, request: web.Request) -> web.Response:
        if not isinstance(self.clock, ManualClock):
            return web.json_response({"ok": False, "error": "the clock is wall time"}, status=400)
        body = await request.json()
        seconds = float(body.get("seconds", 0))
        if seconds < 0:
            return web.json_response({"ok": False, "error": "seconds must be >= 0"}, status=400)
        self._ex.advance_to(self.clock.now_ms() + round(seconds * 1000), set_clock=True)
        return web.json_response({"ok": True, "now_ms": self.clock.now_ms()})

    async def _admin_price(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            self._ex.set_price(str(body["symbol"]), Decimal(str(body["price"])))
        except (KeyError, ValueError, ArithmeticError) as exc:
            return web.json_response({"ok": False, "error": repr(exc)}, status=400)
        return web.json_response({"ok": True})
