"""The venue's state and its clock-driven life, owned by the simulator's event loop.

Everything here runs on one thread (the loop's), so there are no locks; other
threads get in only through `call`, which runs a function on the loop and
waits for it. Time moves only through `advance_to`, which walks minute by
minute (and, where orders wait for a price, path knot by path knot) so that
bars close, funding settles, stops trigger and DCP fires in time order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from decimal import Decimal
from typing import Any, Callable

from aiohttp import web

from infra.logging import get_logger
from infra.sim.clock import Clock
from infra.sim.faults import Faults
from infra.sim.history import ws_kline
from infra.sim.ids import IdSource
from infra.sim.instruments import fixed, instrument_for
from infra.sim.market import FUNDING_MS, MIN_MS, Hole, SymbolModel
from infra.sim.wire import dec_fixed, dec_str, dumps
from infra.sim.ws import DCP_TOPICS, PRIVATE, PRIVATE_TOPICS, PUBLIC, Conn, on_auth, on_ping
from messages.types import INTERVALS, align_ms, interval_ms, is_aligned

log = get_logger("sim")

WALL_TICK_S = 0.1  # wall-clock mode: how often time is processed and tickers pushed
KLINE_PUSH_MS = 1_000  # wall-clock mode: running kline update period


class Exchange:
    """The venue: market models, connections, the account and the fault switches."""

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
    ):
        if not symbols:
            raise ValueError("the simulator needs at least one symbol")
        self.clock = clock
        self.seed = seed
        self.ids = IdSource(seed)
        self.models: dict[str, SymbolModel] = {s: SymbolModel(instrument_for(s, seed), seed) for s in symbols}
        self.holes: list[Hole] = []
        self.hole_by_symbol: dict[str, list[Hole]] = {s: [] for s in symbols}
        self.api_key = api_key
        self.keys = {api_key: api_secret}
        self.ack_delay_s = ack_delay_s
        self.faults = Faults(self)
        self.conns: dict[Conn, None] = {}
        self.subs: dict[str, dict[Conn, None]] = {}
        self._ticker: dict[str, dict[str, str]] = {}
        self._ticker_cs: dict[str, int] = {}
        self._ticker_at: dict[str, int] = {}
        self._stats_cache: dict[str, tuple[int, tuple[int, ...]]] = {}
        self._kline_pushed_at = 0
        self.processed_ms = clock.now_ms()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        from infra.sim.account import Account  # noqa: PLC0415 - the account needs the exchange first

        self.account = Account(self, dcp_available=dcp_available, starting_balance=starting_balance_usdt)

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

    # --- connections ------------------------------------------------------------------

    def new_conn_id(self, kind: str) -> str:
        if kind == PUBLIC:
            return self.ids.uuid("conn")
        return f"{self.ids.token('conn')}-{self.ids.number('conn-n'):x}"

    def register(self, conn: Conn) -> None:
        self.conns[conn] = None

    def unregister(self, conn: Conn) -> None:
        self.conns.pop(conn, None)
        for topic in conn.topics:
            subs = self.subs.get(topic)
            if subs is not None:
                subs.pop(conn, None)
        if conn.kind == PRIVATE:
            self.account.on_private_gone(conn, self.now())

    def connections(self, kinds: tuple[str, ...]) -> list[Conn]:
        return [c for c in self.conns if c.kind in kinds and not c.closed]

    def drop_connections(self, kinds: tuple[str, ...], close_frame: bool) -> int:
        conns = self.connections(kinds)
        for conn in conns:
            if close_frame:
                asyncio.ensure_future(conn.close())
            else:
                conn.abort()
        return len(conns)

    def broadcast_raw(self, kinds: tuple[str, ...], text: str) -> int:
        conns = self.connections(kinds)
        for conn in conns:
            conn.send(text)
        return len(conns)

    def send_malformed(self, kinds: tuple[str, ...], kind: str) -> int:
        conns = self.connections(kinds)
        symbol = next(iter(self.models))
        for conn in conns:
            if kind == "not_json":
                conn.send("this is not json")
            elif kind == "truncated":
                conn.send('{"topic":"tickers.' + symbol + '","type":"snap')
            elif kind == "unknown_topic":
                conn.send_obj({"topic": "tickers.NOSUCHUSDT", "type": "snapshot", "data": {"symbol": "NOSUCHUSDT"},
                               "cs": 1, "ts": self.now()})
            elif kind == "delta_before_snapshot":
                conn.send_obj({"topic": "tickers.NEWUSDT", "type": "delta", "data": {"symbol": "NEWUSDT"},
                               "cs": 1, "ts": self.now()})
            elif kind == "bad_pong":
                conn.send_obj({"op": "ping", "success": True, "ret_msg": ""})
        return len(conns)

    # --- frames from clients ------------------------------------------------------------

    def on_frame(self, conn: Conn, frame: dict) -> None:
        op = frame.get("op")
        if op == "ping":
            on_ping(conn, frame, self.now())
        elif op == "auth":
            on_auth(conn, frame, self.keys, self.faults.state.auth_delay_s)
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
        if len(parts) == 2 and parts[0] == "tickers" and parts[1] in self.models:
            return None
        if len(parts) == 3 and parts[0] == "kline" and parts[1] in INTERVALS and parts[2] in self.models:
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
        conn.pause(self.ack_delay_s)
        ack_ok = not problems and bool(args)
        conn.send_obj(_sub_ack(conn, "subscribe", req_id, ack_ok, problems[0] if problems else ""))
        now = self.now()
        for topic in new:
            if topic.startswith("tickers."):
                self._send_ticker_snapshot(conn, topic.split(".")[1], now)
            elif topic.startswith("kline."):
                _, interval, symbol = topic.split(".")
                conn.send(self._kline_frame(topic, symbol, interval, now))
            elif topic in DCP_TOPICS:
                self.account.on_dcp_subscribed(conn)

    def _unsubscribe(self, conn: Conn, frame: dict) -> None:
        args = frame.get("args")
        args = args if isinstance(args, list) else []
        for topic in args:
            if topic in conn.topics:
                del conn.topics[topic]
                self.subs.get(topic, {}).pop(conn, None)
                if topic in DCP_TOPICS and not any(t in conn.topics for t in DCP_TOPICS):
                    self.account.on_private_gone(conn, self.now())
        conn.send_obj(_sub_ack(conn, "unsubscribe", frame.get("req_id"), True))

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
                        frame_id = f"{self.ids.token('push', 12)}-{self.ids.number('push-n')}"
                    text = dumps({"id": frame_id, "topic": sub, "creationTime": now, "data": data})
                    conn.send(text)
                    if topic == "execution" and self.faults.state.duplicate_executions > 0:
                        conn.send(text)
        if topic == "execution" and text is not None and self.faults.state.duplicate_executions > 0:
            self.faults.state.duplicate_executions -= 1

    # --- market data ----------------------------------------------------------------------

    def _stats24(self, symbol: str, m: int) -> tuple[int, ...]:
        cached = self._stats_cache.get(symbol)
        if cached is not None and cached[0] == m:
            return cached[1]
        model = self.models[symbol]
        day = model.aggregate(m - 1440, m)
        hour_ago = model.aggregate(m - 60, m - 59)
        assert day is not None and hour_ago is not None
        stats = (*day, hour_ago[0])
        self._stats_cache[symbol] = (m, stats)
        return stats

    def ticker_fields(self, symbol: str, t: int) -> dict[str, str]:
        """Every ticker field at time t (no tickDirection), as strings."""
        model = self.models[symbol]
        inst = model.inst
        last = model.last_ticks(t)
        mark = model.mark_ticks(t, last)
        index = model.index_ticks(t, last)
        prev24, hi, lo, _, vol, turnover, prev1h = self._stats24(symbol, t // MIN_MS)
        _, ph, pl, _, pv, pt = model.minute_partial(t)
        hi, lo, vol, turnover = max(hi, ph), min(lo, pl), vol + pv, turnover + pt
        pcnt = (Decimal(last - prev24) / Decimal(prev24)).quantize(Decimal("0.000001"))
        next_funding = (t // FUNDING_MS + 1) * FUNDING_MS
        rate = Decimal(model.funding_rate_e6(next_funding)).scaleb(-6)
        bid_size, ask_size = model.book_sizes(t)
        oi = model.open_interest_steps(t)
        p = inst.price_str
        return {
            "symbol": symbol,
            "price24hPcnt": dec_str(pcnt),
            "lastPrice": p(last),
            "prevPrice24h": p(prev24),
            "highPrice24h": p(hi),
            "lowPrice24h": p(lo),
            "prevPrice1h": p(prev1h),
            "markPrice": p(mark),
            "indexPrice": p(index),
            "openInterest": inst.qty_str(oi),
            "openInterestValue": dec_fixed(inst.qty_dec(oi) * inst.price_dec(mark), 2),
            "turnover24h": fixed(turnover, 4),
            "volume24h": inst.qty_str(vol),
            "fundingRate": dec_str(rate),
            "nextFundingTime": str(next_funding),
            "bid1Price": p(last),
            "bid1Size": inst.qty_str(bid_size),
            "ask1Price": p(last + 1),
            "ask1Size": inst.qty_str(ask_size),
            "fundingIntervalHour": "8",
            "fundingCap": "0.005",
        }

    def rest_ticker(self, symbol: str, t: int) -> dict[str, str]:
        f = self.ticker_fields(symbol, t)
        return {
            "symbol": symbol, "lastPrice": f["lastPrice"], "indexPrice": f["indexPrice"], "markPrice": f["markPrice"],
            "prevPrice24h": f["prevPrice24h"], "price24hPcnt": f["price24hPcnt"], "highPrice24h": f["highPrice24h"],
            "lowPrice24h": f["lowPrice24h"], "prevPrice1h": f["prevPrice1h"], "openInterest": f["openInterest"],
            "openInterestValue": f["openInterestValue"], "turnover24h": f["turnover24h"], "volume24h": f["volume24h"],
            "fundingRate": f["fundingRate"], "nextFundingTime": f["nextFundingTime"], "predictedDeliveryPrice": "",
            "basisRate": "", "deliveryFeeRate": "", "deliveryTime": "0", "ask1Size": f["ask1Size"],
            "bid1Price": f["bid1Price"], "ask1Price": f["ask1Price"], "bid1Size": f["bid1Size"], "basis": "",
            "preOpenPrice": "", "preQty": "", "curPreListingPhase": "", "fundingIntervalHour": "8",
            "basisRateYear": "", "fundingCap": "0.005",
        }

    def _ws_ticker_state(self, symbol: str, t: int) -> dict[str, str]:
        fields = self.ticker_fields(symbol, t)
        old = self._ticker.get(symbol)
        direction = "ZeroPlusTick"
        if old is not None:
            before, after = Decimal(old["lastPrice"]), Decimal(fields["lastPrice"])
            if after > before:
                direction = "PlusTick"
            elif after < before:
                direction = "MinusTick"
            else:
                direction = old["tickDirection"] if old["tickDirection"].startswith("Zero") else "Zero" + old["tickDirection"]
        state = {"symbol": symbol, "tickDirection": direction}
        state.update((k, v) for k, v in fields.items() if k != "symbol")
        state.update(preOpenPrice="", preQty="", curPreListingPhase="")
        return state

    def _publish_ticker(self, symbol: str, t: int) -> None:
        state = self._ws_ticker_state(symbol, t)
        old = self._ticker.get(symbol)
        self._ticker[symbol] = state
        self._ticker_at[symbol] = t
        if old is None:
            self._ticker_cs[symbol] = self._ticker_cs.get(symbol, 0) + 1
            return
        changed = {k: v for k, v in state.items() if old.get(k) != v and k != "symbol"}
        if not changed:
            return
        cs = self._ticker_cs[symbol] = self._ticker_cs[symbol] + 1
        subs = self.subs.get(f"tickers.{symbol}")
        if subs:
            text = dumps({"topic": f"tickers.{symbol}", "type": "delta", "data": {"symbol": symbol, **changed},
                          "cs": cs, "ts": t})
            for conn in subs:
                conn.send(text)

    def _send_ticker_snapshot(self, conn: Conn, symbol: str, t: int) -> None:
        if self._ticker_at.get(symbol) != t:
            self._publish_ticker(symbol, t)
        conn.send_obj({"topic": f"tickers.{symbol}", "type": "snapshot", "data": self._ticker[symbol],
                       "cs": self._ticker_cs[symbol], "ts": t})

    def _kline_frame(self, topic: str, symbol: str, interval: str, t: int, bar: Any = None, confirm: bool = False) -> str:
        model = self.models[symbol]
        if bar is None:
            bar = model.running_bar(interval, align_ms(interval, t), t)
        return dumps({"topic": topic, "data": [ws_kline(model, interval, bar, confirm, t)], "ts": t, "type": "snapshot"})

    def _kline_topics(self) -> list[tuple[str, str, str]]:
        out = []
        for topic, subs in self.subs.items():
            if subs and topic.startswith("kline."):
                _, interval, symbol = topic.split(".")
                out.append((topic, interval, symbol))
        return out

    def publish_market(self, t: int, klines: bool = True) -> None:
        for symbol in self.models:
            if self.subs.get(f"tickers.{symbol}"):
                self._publish_ticker(symbol, t)
        if klines:
            for topic, interval, symbol in self._kline_topics():
                text = self._kline_frame(topic, symbol, interval, t)
                for conn in self.subs[topic]:
                    conn.send(text)

    def _close_bars(self, b: int) -> None:
        """Push confirm=true for every subscribed kline whose bar closes at `b`."""
        for topic, interval, symbol in self._kline_topics():
            if not is_aligned(interval, b):
                continue
            step = interval_ms(interval)
            prev_open = b - step if step is not None else align_ms("M", b - 1)
            bar = self.models[symbol].closed_bars(interval, prev_open, 1)[0]
            text = self._kline_frame(topic, symbol, interval, b, bar=bar, confirm=True)
            for conn in self.subs[topic]:
                conn.send(text)

    # --- time --------------------------------------------------------------------------------

    def advance_to(self, target: int, set_clock: bool) -> None:
        """Process time up to `target`: triggers along the path, bar closes, funding, DCP."""
        t = self.processed_ms
        while t < target:
            nxt = min(target, (t // MIN_MS + 1) * MIN_MS)
            due = self.account.dcp_due()
            if due is not None and t < due < nxt:
                nxt = due
            self.account.on_path(t, nxt)
            t = nxt
            if set_clock:
                self.clock._set(t)  # type: ignore[attr-defined]
            self.processed_ms = t
            if t % MIN_MS == 0:
                self._close_bars(t)
                if t % FUNDING_MS == 0:
                    self.account.settle_funding(t)
            self.account.check_dcp(t)
        if set_clock:
            self.publish_market(target)
            self.account.push_position_marks(target)

    def wall_tick(self) -> None:
        now = self.now()
        if now <= self.processed_ms:
            return
        self.advance_to(now, set_clock=False)
        klines = now - self._kline_pushed_at >= KLINE_PUSH_MS
        if klines:
            self._kline_pushed_at = now
        self.publish_market(now, klines=klines)

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
        self._stats_cache.pop(symbol, None)
        self.account.on_jump(symbol, t, before, ticks)
        self.publish_market(t)

    def add_hole(self, symbol: str, start_ms: int, end_ms: int, interval: str | None) -> None:
        if symbol not in self.models:
            raise ValueError(f"unknown symbol {symbol}")
        if interval is not None and interval not in INTERVALS:
            raise ValueError(f"unknown interval {interval}")
        if end_ms < start_ms:
            raise ValueError("end_ms must not be before start_ms")
        hole = Hole(int(start_ms), int(end_ms), interval)
        self.holes.append(hole)
        self.hole_by_symbol[symbol].append(hole)


def _sub_ack(conn: Conn, op: str, req_id: Any, success: bool, ret_msg: str = "") -> dict:
    if conn.kind == PUBLIC:
        return {"success": success, "ret_msg": ret_msg, "conn_id": conn.conn_id, "req_id": req_id or "", "op": op}
    ack: dict[str, Any] = {"success": success, "ret_msg": ret_msg, "op": op, "conn_id": conn.conn_id}
    if req_id:
        ack["req_id"] = req_id
    return ack


EXCHANGE = web.AppKey("exchange", Exchange)
