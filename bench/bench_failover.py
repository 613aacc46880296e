"""Failover: how long until every subscribed public topic flows again after the venue's socket fails.

    python -m bench failover

The simulator runs as `python -m infra.sim` in its own process. The node
side is the smallest real set that fails over by itself: a Supervisor with
the StateStore (whose health says which streams are stale) and WsPublic
(whose socket reconnects), the staleness window `public_stale_after_s` at
WINDOW_S = 5 s and every other supervisor setting at its default, a fresh
node per round (so each round is a first failure, not a restart the
intensity limit backs off). SYMBOLS each stream their ticker and 1-minute
klines. A round ends at the first frame of *every* topic on a connection
that was not open when the fault was switched on (told apart by the pybit
thread the frame arrives on: every pybit connection has its own); its
figure is the seconds from switching the fault on to the last of those
first frames.

* `failover_s` (target <= 7 s): `silence_open_sockets` sticks the open
  public socket (open, PINGs answered, nothing sent). The StateStore sees
  the streams go stale, the Supervisor replaces WsPublic, the replacement
  subscribes the desired set on a new connection.
  Reference `failover_raw_s`: a bare pybit socket cannot notice silence by
  itself (REFERENCE.md 5.2: PINGs answered, no data, pybit stays
  "connected" forever), so the reference is an ideal watchdog bolted onto
  it: it fires exactly when the first topic has been silent for the window
  (no polling, no lag), and then a bare pybit socket is opened and
  subscribed to the same topics. So `failover_s_ratio` = raw/ours is what
  our detection (health polled every `check_interval_s`) and replacement
  (retire, start, subscribe) cost against a perfect detector with the
  libraries alone; it can never honestly exceed about 1.
* `failover_drop_s` (target <= 2 s): `drop_sockets` cuts the public TCP
  connection without a close frame. WsPublic's socket reconnects and the
  actor resubscribes the desired set. Reference `failover_drop_raw_s`:
  pybit's own reconnect-and-resubscribe after the same drop, to its first
  frame of every topic.

Ratios are raw/ours (`Comparison.latency`): higher is better, like a throughput ratio.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pykka

from actors.base import ActorContext, Directory, Role
from actors.state_store import StateStore
from actors.supervisor import ChildSpec, Supervisor
from actors.ws_public import WsPublic
from bench.compare import alternate
from bench.node_config import node_config
from bench.sim_process import SimControl, sim_process
from infra.bybit.clients import VenueUrls, make_managed_public_ws, make_public_ws
from infra.config import AppConfig
from infra.logging import configure_logging
from messages.control import Ping

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
TOPICS = frozenset([f"tickers.{s}" for s in SYMBOLS] + [f"kline.1.{s}" for s in SYMBOLS])
WINDOW_S = 5.0
SILENCE_ROUNDS = 3  # each costs more than the window, for both sides
DROP_ROUNDS = 7
UP_TIMEOUT_S = 15.0
RECOVERY_TIMEOUT_S = 60.0
SETTLE_S = 0.5
# Streams run this long before the fault (untimed): a steady state, not the burst of snapshots
# right after subscribing, and the new socket's first window partly behind it.
STEADY_S = 1.5
TARGETS = {"failover_s": ("<=", 7.0), "failover_drop_s": ("<=", 2.0)}


class Probe:
    """Per pybit connection (its thread), when each topic first arrived; and per topic, when last."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._first: dict[threading.Thread, dict[str, float]] = {}  # holds the threads: no id reuse
        self.last: dict[str, float] = {}
        self._old: frozenset[threading.Thread] = frozenset()
        self._complete: threading.Thread | None = None
        self._armed = False
        self.ready = threading.Event()  # some connection delivered every topic
        self.recovered = threading.Event()  # a connection opened after `arm` delivered every topic

    def frame(self, frame: Any) -> None:
        topic = frame.get("topic") if isinstance(frame, dict) else None
        if topic not in TOPICS:
            return
        now = time.perf_counter()
        conn = threading.current_thread()
        with self._lock:
            self.last[topic] = now
            seen = self._first.setdefault(conn, {})
            if topic in seen:
                return
            seen[topic] = now
            if len(seen) == len(TOPICS):
                self.ready.set()
                if self._armed and conn not in self._old and self._complete is None:
                    self._complete = conn
                    self.recovered.set()

    def arm(self) -> None:
        """From now on only a connection not open yet counts as the replacement."""
        with self._lock:
            self._old = frozenset(self._first)
            self._complete = None
            self._armed = True
            self.recovered.clear()

    def recovered_at(self) -> float:
        with self._lock:
            assert self._complete is not None
            return max(self._first[self._complete].values())

    def wait(self, event: threading.Event, timeout: float, what: str) -> None:
        if not event.wait(timeout):
            with self._lock:
                got = {c.name: sorted(t) for c, t in self._first.items()}
            raise RuntimeError(f"{what}: not every topic arrived within {timeout}s (got {got})")


def _config(tmp: Path) -> AppConfig:
    symbols = "".join(f"  {s}:\n    intervals: ['1']\n    tickers: true\n" for s in SYMBOLS)
    return node_config(tmp, f"symbols:\n{symbols}supervisor:\n  public_stale_after_s: {WINDOW_S}\n")


def _settle() -> None:
    # Outside the timed part: the closed sockets' last frames and handshakes are done before
    # the next round switches a fault on (which would hit a connection still closing too).
    time.sleep(SETTLE_S)


# --- the node ---------------------------------------------------------------------------------

def _node(app: AppConfig, venue: SimControl, probe: Probe) -> pykka.ActorRef[Any]:
    """Supervisor -> StateStore, WsPublic; every frame WsPublic's socket receives is shown to the probe
    after the node's own router has handled it."""

    def probed_socket(urls: VenueUrls, on_frame: Callable[[dict[str, Any]], None], **kwargs: Any) -> Any:
        def frame(f: dict[str, Any]) -> None:
            on_frame(f)
            probe.frame(f)

        return make_managed_public_ws(urls, on_frame=frame, **kwargs)

    children = [
        ChildSpec(role=Role.STATE_STORE, start=StateStore.start, dependents=(Role.WS_PUBLIC,)),
        ChildSpec(role=Role.WS_PUBLIC, start=lambda ctx: WsPublic.start(ctx, socket_factory=probed_socket),
                  socket="public"),
    ]
    supervisor = Supervisor.start(app, Directory(), children, urls=venue.urls)
    supervisor.ask(Ping(), timeout=UP_TIMEOUT_S)
    return supervisor


def _ours(app: AppConfig, venue: SimControl, fault: Callable[[], None]) -> Callable[[], float]:
    def one() -> float:
        probe = Probe()
        supervisor = _node(app, venue, probe)
        try:
            probe.wait(probe.ready, UP_TIMEOUT_S, "node start")
            time.sleep(STEADY_S)
            probe.arm()
            started = time.perf_counter()
            fault()
            probe.wait(probe.recovered, RECOVERY_TIMEOUT_S, "node failover")
            return probe.recovered_at() - started
        finally:
            supervisor.stop(block=True, timeout=15)
            _settle()

    return one


# --- the raw reference: pybit alone -------------------------------------------------------------

def _bare_socket(venue: SimControl, probe: Probe) -> Any:
    ws = make_public_ws(venue.urls)
    ws.subscribe("tickers.{symbol}", callback=probe.frame, symbol=list(SYMBOLS))
    ws.subscribe("kline.1.{symbol}", callback=probe.frame, symbol=list(SYMBOLS))
    return ws


def _steady_then(venue: SimControl, probe: Probe, fault: str) -> float:
    """Once the bare socket streams every topic and has run steadily, pull `fault`: when it was pulled."""
    probe.wait(probe.ready, UP_TIMEOUT_S, "bare socket")
    time.sleep(STEADY_S)
    probe.arm()
    started = time.perf_counter()
    venue.fault(fault, channel="public")
    return started


def _raw_drop(venue: SimControl) -> Callable[[], float]:
    def one() -> float:
        probe = Probe()
        ws = _bare_socket(venue, probe)
        try:
            started = _steady_then(venue, probe, "drop_sockets")
            probe.wait(probe.recovered, RECOVERY_TIMEOUT_S, "pybit reconnect")
            return probe.recovered_at() - started
        finally:
            ws.exit()
            _settle()

    return one


def _raw_silence(venue: SimControl) -> Callable[[], float]:
    def one() -> float:
        probe = Probe()
        stuck = _bare_socket(venue, probe)
        fresh = None
        try:
            started = _steady_then(venue, probe, "silence_open_sockets")
            # The ideal watchdog: fires the instant the first topic has been silent for the window.
            # Nothing arrives after the switch returns, so the last-seen times are final now.
            fires_at = min(probe.last[t] for t in TOPICS) + WINDOW_S
            time.sleep(max(0.0, fires_at - time.perf_counter()))
            fresh = _bare_socket(venue, probe)
            probe.wait(probe.recovered, RECOVERY_TIMEOUT_S, "fresh bare socket")
            return probe.recovered_at() - started
        finally:
            for ws in (stuck, fresh):
                if ws is not None:
                    ws.exit()
            _settle()

    return one


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench_failover_") as tmp:
        configure_logging(console="off", file_path=Path(tmp) / "bench.jsonl")
        app = _config(Path(tmp))
        try:
            with sim_process(extra_args=("--symbols", ",".join(SYMBOLS))) as rest:
                venue = SimControl(rest)
                drop = alternate(raw=_raw_drop(venue),
                                 ours=_ours(app, venue, lambda: venue.fault("drop_sockets", channel="public")),
                                 rounds=DROP_ROUNDS)
                silence = alternate(raw=_raw_silence(venue),
                                    ours=_ours(app, venue, lambda: venue.fault("silence_open_sockets",
                                                                               channel="public")),
                                    rounds=SILENCE_ROUNDS)
        finally:
            pykka.ActorRegistry.stop_all(block=True, timeout=10)
    figures = silence.latency("failover_s", "failover_raw_s", unit_s=1, digits=3)
    figures.update(drop.latency("failover_drop_s", "failover_drop_raw_s", unit_s=1, digits=3))
    return figures


if __name__ == "__main__":
    for key, value in run().items():
        print(key, value)
