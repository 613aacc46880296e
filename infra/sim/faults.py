"""Fault switches: every way the venue misbehaves that the node must survive.

Each switch is one method on `Faults`, callable from any thread (it runs on
the simulator's event loop and returns once the effect is visible to
clients) and over the loopback admin endpoint `POST /sim/fault/<name>` with
the same keyword arguments as JSON. Each logs `sim.fault.<name>`.
Durations are wall-clock seconds: they model the network, not the market.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from infra.logging import get_logger
from infra.sim.malformed import FLOOD_KINDS, MALFORMED_KINDS, malformed_frame

if TYPE_CHECKING:
    from infra.sim.exchange import Exchange

log = get_logger("sim")

CHANNELS = ("public", "private")
FLOOD_STEP_S = 0.005  # how often the load switches top their frames up to the asked rate
MAX_TICKER_RATE = 20_000


def _channels(channel: str) -> tuple[str, ...]:
    if channel in ("all", "both"):
        return CHANNELS
    if channel not in CHANNELS:
        raise ValueError(f"channel must be public, private or all (got {channel!r})")
    return (channel,)


def _until(seconds: float | None) -> float:
    return float("inf") if seconds is None else time.monotonic() + float(seconds)


@dataclass
class _Window:
    """A switch that is on until a wall-clock deadline and/or for a number of uses."""

    until: float = 0.0
    count: int | None = None
    path: str | None = None
    value: Any = None

    def active(self, path: str | None = None) -> bool:
        if time.monotonic() >= self.until or self.count == 0:
            return False
        return self.path is None or path is None or self.path == path

    def remaining_ms(self) -> int:
        left = self.until - time.monotonic()
        # Rounded up: a reset the venue announces is never earlier than the window's real end,
        # or a client that waits exactly until it is refused once more.
        return 1000 if left == float("inf") else max(0, math.ceil(left * 1000))

    def take(self, path: str | None = None) -> bool:
        if not self.active(path):
            return False
        if self.count is not None:
            self.count -= 1
        return True


@dataclass
class FaultState:
    silent: dict[str, _Window] = field(default_factory=lambda: {c: _Window() for c in CHANNELS})
    refuse: _Window = field(default_factory=_Window)
    http_error: _Window = field(default_factory=_Window)
    delay: _Window = field(default_factory=_Window)
    rate_limited: dict[str, _Window] = field(default_factory=dict)
    # value: (probability, reset_ms, random.Random) - see Faults.rate_limit_randomly
    random_rate_limit: _Window = field(default_factory=_Window)
    ip_ban: _Window = field(default_factory=_Window)
    zero_avg_price_next_market: int = 0  # realtime answers that show "0" for the next market order
    empty_positions: _Window = field(default_factory=_Window)
    fail_creates: _Window = field(default_factory=_Window)
    timeout_creates: _Window = field(default_factory=_Window)
    auth_delay_s: float = 0.0
    duplicate_executions: int = 0
    deltas_first: int = 0  # the next n ticker subscriptions get a delta before their snapshot
    ticker_rate: _Window = field(default_factory=_Window)  # value: extra ticker deltas per second per symbol
    malformed_rate: _Window = field(default_factory=_Window)  # value: (frames per second, kinds, channels)

    def is_silent(self, channel: str) -> bool:
        return self.silent[channel].active()


class Faults:
    """The switches. `sim.faults.<name>(...)`; `clear()` switches everything off."""

    def __init__(self, exchange: "Exchange"):
        self._ex = exchange
        self.state = FaultState()
        self._flood: asyncio.Task[None] | None = None

    # --- plumbing ---------------------------------------------------------------

    def _apply(self, name: str, fn: Callable[[], Any], **fields: Any) -> Any:
        def run() -> Any:
            log.warning(f"sim.fault.{name}", **{k: v for k, v in fields.items() if v is not None})
            return fn()

        return self._ex.call(run)

    def names(self) -> list[str]:
        return sorted(n for n in dir(self) if not n.startswith("_") and n not in ("state", "names", "invoke"))

    def invoke(self, name: str, kwargs: dict[str, Any]) -> Any:
        """Admin endpoint entry: the named switch with JSON keyword arguments."""
        if name not in self.names():
            raise KeyError(name)
        return getattr(self, name)(**kwargs)

    # --- connections -------------------------------------------------------------

    def drop_sockets(self, channel: str = "all", close_frame: bool = False) -> int:
        """Drop every open WebSocket of the channel. Without a close frame (default) it is a lost TCP connection."""
        chans = _channels(channel)
        return self._apply(
            "drop_sockets", lambda: self._ex.sessions.drop(chans, close_frame), channel=channel,
            close_frame=close_frame,
        )

    def go_silent(self, channel: str = "all", seconds: float | None = None) -> None:
        """Half-open: sockets stay open and protocol PINGs are answered, but no frame is sent."""
        chans = _channels(channel)

        def run() -> None:
            for c in chans:
                self.state.silent[c] = _Window(until=_until(seconds))

        self._apply("go_silent", run, channel=channel, seconds=seconds)

    def silence_open_sockets(self, channel: str = "public") -> int:
        """Stick the connections of the channel that are open now; returns how many.

        Each stays open and its protocol PINGs are still answered (by the WebSocket layer), but
        it sends nothing ever again: no data, no pong to `{"op": "ping"}`, no subscribe ack.
        What a stuck venue socket looks like, and what pybit never notices by itself
        (REFERENCE.md 5.2). Connections opened afterwards work normally, so a client that
        notices the silence and opens a new socket recovers (`go_silent`, by contrast,
        silences new connections too). Lasts until the connection closes or `clear()`."""
        chans = _channels(channel)
        return self._apply("silence_open_sockets", lambda: self._ex.sessions.silence(chans), channel=channel)

    def end_silence(self, channel: str = "all") -> None:
        chans = _channels(channel)

        def run() -> None:
            for c in chans:
                self.state.silent[c] = _Window()

        self._apply("end_silence", run, channel=channel)

    def refuse_connections(self, seconds: float) -> None:
        """New TCP connections (REST and WebSocket) are cut at once for `seconds`."""
        self._apply("refuse_connections", lambda: setattr(self.state, "refuse", _Window(until=_until(seconds))),
                    seconds=seconds)

    def inject_frame(self, channel: str, text: str) -> int:
        """Send a raw text frame to every open connection of the channel."""
        chans = _channels(channel)
        return self._apply("inject_frame", lambda: self._ex.sessions.broadcast_raw(chans, text), channel=channel,
                           chars=len(text))

    def malformed_frames(self, channel: str = "public", kind: str = "not_json") -> int:
        """Inject one malformed frame per open connection: not_json, truncated, unknown_topic,
        delta_before_snapshot (a ticker delta for a topic the client has no snapshot of), bad_pong."""
        if kind not in MALFORMED_KINDS:
            raise ValueError(f"kind must be one of {', '.join(MALFORMED_KINDS)}")
        chans = _channels(channel)
        return self._apply("malformed_frames", lambda: self._ex.sessions.send_malformed(chans, kind),
                           channel=channel, kind=kind)

    def delta_before_snapshot(self, n: int = 1) -> None:
        """The next `n` new ticker subscriptions (any connection) get a delta before their snapshot:
        what Bybit never does, and what ended pybit's stream when this simulator once did it."""
        self._apply("delta_before_snapshot", lambda: setattr(self.state, "deltas_first", max(0, int(n))), n=n)

    def ticker_rate(self, per_s: float, seconds: float | None = None) -> None:
        """Push `per_s` extra ticker deltas per second per subscribed symbol (book sizes change,
        prices do not) on top of the normal feed, for `seconds` (default: until cleared; 0 stops)."""
        per_s = float(per_s)
        if not 0 <= per_s <= MAX_TICKER_RATE:
            raise ValueError(f"per_s must be within 0..{MAX_TICKER_RATE}")

        def run() -> None:
            self.state.ticker_rate = _Window(until=_until(seconds), value=per_s) if per_s else _Window()
            self._ensure_flood()

        self._apply("ticker_rate", run, per_s=per_s, seconds=seconds)

    def malformed_rate(self, per_s: float, kinds: list[str] | None = None, channel: str = "public",
                       seconds: float | None = None) -> None:
        """Mix `per_s` malformed frames per second per connection among the good ones, cycling
        through `kinds` (default: missing_fields, wrong_types, unknown_topic, not_json); 0 stops."""
        per_s = float(per_s)
        kinds_t = tuple(kinds) if kinds else FLOOD_KINDS
        bad = [k for k in kinds_t if k not in MALFORMED_KINDS]
        if bad or not 0 <= per_s <= MAX_TICKER_RATE:
            raise ValueError(f"kinds must be among {', '.join(MALFORMED_KINDS)}; per_s within 0..{MAX_TICKER_RATE}")
        chans = _channels(channel)

        def run() -> None:
            self.state.malformed_rate = (
                _Window(until=_until(seconds), value=(per_s, kinds_t, chans)) if per_s else _Window()
            )
            self._ensure_flood()

        self._apply("malformed_rate", run, per_s=per_s, kinds=list(kinds_t), channel=channel, seconds=seconds)

    def _ensure_flood(self) -> None:
        if self._flood is None or self._flood.done():
            self._flood = asyncio.get_running_loop().create_task(self._run_flood())

    async def _run_flood(self) -> None:
        """Top the load switches up to their rates every FLOOD_STEP_S; ends when both are off.
        Counting from each switch's own start keeps the average rate exact whatever the loop's jitter."""
        sent: dict[str, tuple[_Window, float, int]] = {}  # switch -> (its window, started, frames sent)
        n = 0
        while True:
            tick, bad = self.state.ticker_rate, self.state.malformed_rate
            if not tick.active() and not bad.active():
                self._flood = None
                return
            now = time.monotonic()
            for name, window in (("tick", tick), ("bad", bad)):
                if window.active() and (name not in sent or sent[name][0] is not window):
                    sent[name] = (window, now, 0)
            if tick.active():
                _, started, done = sent["tick"]
                due = int((now - started) * tick.value) - done
                if due > 0:
                    self._ex.feed.flood_ticker_deltas(due, self._ex.now())
                    sent["tick"] = (tick, started, done + due)
            if bad.active():
                per_s, kinds, chans = bad.value
                _, started, done = sent["bad"]
                due = int((now - started) * per_s) - done
                if due > 0:
                    symbol = next(iter(self._ex.models))
                    for _ in range(due):
                        n += 1
                        self._ex.sessions.broadcast_raw(
                            chans, malformed_frame(kinds[n % len(kinds)], symbol, self._ex.now(), n // len(kinds)))
                    sent["bad"] = (bad, started, done + due)
            await asyncio.sleep(FLOOD_STEP_S)

    # --- REST ------------------------------------------------------------------------

    def http_error(self, status: int = 503, seconds: float | None = None, count: int | None = None,
                   path: str | None = None) -> None:
        """Answer REST requests (optionally one path) with an HTTP 5xx status."""
        if not 500 <= status <= 599:
            raise ValueError("status must be a 5xx code")
        w = _Window(until=_until(seconds), count=count, path=path, value=status)
        self._apply("http_error", lambda: setattr(self.state, "http_error", w), status=status, seconds=seconds,
                    count=count, path=path)

    def delay_responses(self, seconds: float, duration: float | None = None, count: int | None = None,
                        path: str | None = None) -> None:
        """Hold REST answers for `seconds` each (for `duration` seconds, or `count` answers)."""
        w = _Window(until=_until(duration), count=count, path=path, value=float(seconds))
        self._apply("delay_responses", lambda: setattr(self.state, "delay", w), seconds=seconds, duration=duration,
                    count=count, path=path)

    def rate_limit(self, path: str, seconds: float | None = None, count: int | None = None) -> None:
        """Answer `path` with retCode 10006 and a reset timestamp `seconds` (default 1) ahead."""
        w = _Window(until=_until(seconds if seconds is not None else 1.0), count=count, path=path)
        self._apply("rate_limit", lambda: self.state.rate_limited.__setitem__(path, w), path=path, seconds=seconds,
                    count=count)

    def rate_limit_randomly(self, probability: float, seconds: float | None = None, reset_ms: int = 100,
                            seed: int | None = None) -> None:
        """Answer each private REST request with 10006 with `probability` (reset `reset_ms` ahead):
        a venue under load, where any call may be refused. `seed` makes the draws repeatable."""
        if not 0.0 <= float(probability) <= 1.0:
            raise ValueError("probability must be within 0..1")
        if not 1 <= int(reset_ms) <= 60_000:
            raise ValueError("reset_ms must be within 1..60000")
        w = _Window(until=_until(seconds), value=(float(probability), int(reset_ms), random.Random(seed)))
        self._apply("rate_limit_randomly", lambda: setattr(self.state, "random_rate_limit", w),
                    probability=probability, seconds=seconds, reset_ms=reset_ms)

    def ip_ban(self, seconds: float) -> None:
        """HTTP 403 for every REST request (and WebSocket handshake) for `seconds`."""
        self._apply("ip_ban", lambda: setattr(self.state, "ip_ban", _Window(until=_until(seconds))), seconds=seconds)

    # --- trading -----------------------------------------------------------------------

    def zero_avg_price_next_market_order(self, queries: int = 1) -> None:
        """The next market order answers avgPrice "0" on its create and the next `queries` realtime/history reads."""
        self._apply("zero_avg_price_next_market_order",
                    lambda: setattr(self.state, "zero_avg_price_next_market", max(1, int(queries))), queries=queries)

    def empty_position_list(self, seconds: float | None = None, count: int | None = None) -> None:
        """position/list answers an empty list although positions exist."""
        w = _Window(until=_until(seconds), count=count)
        self._apply("empty_position_list", lambda: setattr(self.state, "empty_positions", w), seconds=seconds,
                    count=count)

    def fail_next_order_creates(self, n: int = 1, ret_code: int = 10016, ret_msg: str = "Internal server error.") -> None:
        """The next `n` order creates are refused with `ret_code` (nothing is created)."""
        w = _Window(until=float("inf"), count=int(n), value=(int(ret_code), ret_msg))
        self._apply("fail_next_order_creates", lambda: setattr(self.state, "fail_creates", w), n=n, ret_code=ret_code)

    def timeout_next_order_create(self, n: int = 1, hold_s: float = 30.0) -> None:
        """The next `n` creates are accepted (order live, pushes sent) but the answer is held for `hold_s`:
        a client with a shorter timeout sees a timeout, the ambiguous outcome."""
        w = _Window(until=float("inf"), count=int(n), value=float(hold_s))
        self._apply("timeout_next_order_create", lambda: setattr(self.state, "timeout_creates", w), n=n, hold_s=hold_s)

    def delay_private_auth(self, seconds: float) -> None:
        """Hold the private WebSocket `auth` answer for `seconds` (0 switches it off)."""
        self._apply("delay_private_auth", lambda: setattr(self.state, "auth_delay_s", float(seconds)), seconds=seconds)

    def duplicate_next_execution(self, n: int = 1) -> None:
        """Push each of the next `n` execution frames twice."""
        self._apply("duplicate_next_execution", lambda: setattr(self.state, "duplicate_executions", int(n)), n=n)

    # --- history -------------------------------------------------------------------------

    def history_hole(self, symbol: str, start_ms: int, end_ms: int, interval: str | None = None) -> None:
        """Same as `Simulator.add_history_hole`."""
        self._apply("history_hole", lambda: self._ex.add_hole(symbol, start_ms, end_ms, interval), symbol=symbol,
                    start_ms=start_ms, end_ms=end_ms, interval=interval)

    def clear(self) -> None:
        """Switch every fault off (holes stay); the load switches stop with it, and connections
        stuck by `silence_open_sockets` speak again."""

        def run() -> None:
            self.state = FaultState()
            self._ex.sessions.unsilence_all()

        self._apply("clear", run)
