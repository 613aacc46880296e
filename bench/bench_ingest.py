"""Public ingest: simulator (its own process) -> pybit -> router -> StateStore.

    python -m bench ingest

The simulator runs as `python -m infra.sim` in a child process on 127.0.0.1,
so its event loop does not share this process's interpreter lock; its
`ticker_rate` switch floods ticker deltas. Each round opens a fresh socket
(outside the timed part), switches the flood on and times until the
receiver has handled FRAMES deltas; raw and node rounds alternate.

* `raw_pybit_msgs_per_s`: a bare pybit socket (raw frames) whose callback
  only counts: the ceiling for this design.
* `raw_pybit_bytes_msgs_per_s`: the same bare socket with the one change
  the node's socket makes (`BytesFrames`: websocket-client's pure-Python
  UTF-8 check left to `json.loads`), timed alternately with the node in a
  second run: `ingest_bytes_msgs_per_s_ratio` is the node against a bare
  socket that skips the same work, so it shows what the node's own path
  (router, parse, inbox, StateStore) costs.
* `ingest_msgs_per_s`: the same flood through WsPublic's socket and router
  into the real StateStore actor (parse, tell, merge), counted when the
  StateStore has merged the frame, so a growing backlog shows as a lower
  rate. `ingest_msgs_per_s_ratio` = ingest / raw (target >= 0.7).
* `ingest_p99_ms`: simulator frame `ts` -> StateStore merged, at LATENCY_RATE
  frames/s per symbol, p99 over a round (target <= 20 ms); `raw_pybit_p99_ms` is the
  same from `ts` to the counting callback, and `ingest_p99_ms_ratio` is
  raw/ours (latency: higher is better). `ts` has millisecond resolution.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pykka

from actors.base import ActorContext, Directory, Role
from actors.state_store import StateStore
from actors.ws_public import WsPublic
from bench.compare import alternate
from bench.node_config import node_config
from bench.sim_process import SimControl, sim_process
from infra.bybit.clients import BytesFrames, RoutedWebSocket, make_public_ws
from infra.logging import configure_logging
from messages.market import Ticker
from messages.subscriptions import DesiredSubscriptions, SymbolStreams

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
FRAMES = 40_000
# Per second per symbol (the switch's maximum), four symbols: 80,000 frames/s in all, above what
# any receiver here takes (a bare socket that skips websocket-client's UTF-8 check reached about
# 76,000 a second; with two symbols it was capped by the flood), so the receiver is timed.
FLOOD_RATE = 20_000
LATENCY_RATE = 500  # per symbol: 2,000 frames/s in all
LATENCY_S = 3.0
ROUNDS = 7
SETTLE_S = 1.0
TARGETS = {"ingest_msgs_per_s_ratio": (">=", 0.7), "ingest_p99_ms": ("<=", 20.0)}


class Probe:
    """Counts ticker deltas and records their latency (now - frame ts, ms)."""

    def __init__(self) -> None:
        self.snapshot = threading.Event()
        self.done = threading.Event()
        self.target = 0
        self.n = 0
        self.latencies: list[float] | None = None
        self._seen: set[str] = set()

    def arm(self, target: int, latencies: bool) -> None:
        self.n = 0
        self.target = target
        self.latencies = [] if latencies else None
        self.done.clear()

    def delta(self, ts_ms: float) -> None:
        self.n += 1
        if self.latencies is not None:
            self.latencies.append(time.time() * 1000 - ts_ms)
        if self.n == self.target:
            self.done.set()

    def raw_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "delta":
            self.delta(frame["ts"])
        elif kind == "snapshot" and str(frame.get("topic", "")).startswith("tickers."):
            self._snapshot(str(frame["topic"]))

    def ticker(self, msg: Ticker) -> None:
        if msg.is_snapshot:
            self._snapshot(f"tickers.{msg.symbol}")
        else:
            self.delta(msg.ts.timestamp() * 1000)

    def _snapshot(self, topic: str) -> None:
        self._seen.add(topic)
        if len(self._seen) == len(SYMBOLS):
            self.snapshot.set()


class ProbedStateStore(StateStore):
    """The real StateStore; every merged ticker is also shown to the probe (told one by one, or
    drained in a batch from WsPublic's inbox: shown once the whole batch is merged)."""

    def __init__(self, ctx: ActorContext, probe: Probe):
        self._probe = probe
        super().__init__(ctx)

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        handlers = super().handlers()
        merge, probe = handlers[Ticker], self._probe

        def on_ticker(msg: Ticker) -> Any:
            result = merge(msg)
            probe.ticker(msg)
            return result

        handlers[Ticker] = on_ticker
        return handlers

    def _merge_market(self, items: tuple[Any, ...]) -> None:
        # The drain of WsPublic's inbox: every ticker in the batch is merged when this returns.
        super()._merge_market(items)
        for msg in items:
            if type(msg) is Ticker:
                self._probe.ticker(msg)


def _flood(venue: SimControl, probe: Probe, target: int, rate: int, latencies: bool) -> float:
    """Switch the flood on, wait for `target` handled deltas; seconds from switch-on to the last."""
    probe.arm(target, latencies)
    started = time.perf_counter()
    venue.fault("ticker_rate", per_s=rate)
    try:
        if not probe.done.wait(120):
            raise RuntimeError(f"only {probe.n} of {target} deltas arrived")
        return time.perf_counter() - started
    finally:
        venue.fault("ticker_rate", per_s=0)


def _settle() -> None:
    # The simulator may still be writing the last round's backlog into the closed socket;
    # let it finish so the next round does not pay for this one (outside the timed part).
    time.sleep(SETTLE_S)


class _BareBytesSocket(BytesFrames, RoutedWebSocket):
    """A bare pybit socket that hands `json.loads` bytes, as the node's socket does."""


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as tmp, \
            sim_process(extra_args=["--symbols", ",".join(SYMBOLS)]) as rest:
        configure_logging(console="off", file_path=Path(tmp) / "bench.jsonl")
        app = node_config(Path(tmp), f"symbols:\n  {SYMBOLS[0]}:\n    intervals: ['1']\n")
        venue = SimControl(rest)
        desired = DesiredSubscriptions(symbols={s: SymbolStreams(tickers=True) for s in SYMBOLS})
        try:

            def raw_round(target: int, rate: int, latencies: bool, *, as_bytes: bool = False) -> Callable[[], float]:
                def one() -> float:
                    probe = Probe()
                    if as_bytes:
                        ws = _BareBytesSocket(channel_type="linear", testnet=False, ws_url=venue.urls.ws_public,
                                              callback_function=probe.raw_frame)
                    else:
                        ws = make_public_ws(venue.urls, callback_function=probe.raw_frame)
                    try:
                        ws.subscribe("tickers.{symbol}", callback=probe.raw_frame, symbol=list(SYMBOLS))
                        if not probe.snapshot.wait(10):
                            raise RuntimeError("no ticker snapshot on the raw socket")
                        took = _flood(venue, probe, target, rate, latencies)
                        return _p99(probe.latencies) if latencies else took
                    finally:
                        ws.exit()
                        _settle()

                return one

            def node_round(target: int, rate: int, latencies: bool) -> Callable[[], float]:
                def one() -> float:
                    probe = Probe()
                    directory = Directory()
                    ctx = ActorContext(config=app, directory=directory, urls=venue.urls, subscriptions=desired)
                    store = ProbedStateStore.start(ctx, probe)
                    directory.register(Role.STATE_STORE, store)
                    ws = WsPublic.start(ctx)
                    directory.register(Role.WS_PUBLIC, ws)
                    try:
                        if not probe.snapshot.wait(10):
                            raise RuntimeError("no ticker snapshot at the StateStore")
                        took = _flood(venue, probe, target, rate, latencies)
                        return _p99(probe.latencies) if latencies else took
                    finally:
                        ws.stop(block=True, timeout=10)
                        store.stop(block=True, timeout=10)
                        _settle()

                return one

            speed = alternate(raw=raw_round(FRAMES, FLOOD_RATE, False), ours=node_round(FRAMES, FLOOD_RATE, False),
                              rounds=ROUNDS)
            like = alternate(raw=raw_round(FRAMES, FLOOD_RATE, False, as_bytes=True),
                             ours=node_round(FRAMES, FLOOD_RATE, False), rounds=ROUNDS)
            n_latency = int(LATENCY_RATE * len(SYMBOLS) * LATENCY_S)
            latency = alternate(raw=raw_round(n_latency, LATENCY_RATE, True),
                                ours=node_round(n_latency, LATENCY_RATE, True), rounds=ROUNDS)
        finally:
            venue.close()
            pykka.ActorRegistry.stop_all(block=True, timeout=10)
    # The spread behind the medians (a shared machine: one pair can be off by 2x).
    print(f"[bench]   per round (raw, node) frames/s: "
          f"{[(round(FRAMES / r), round(FRAMES / o)) for r, o in zip(speed.raw_s, speed.ours_s)]}")
    print(f"[bench]   per round (raw bytes, node) frames/s: "
          f"{[(round(FRAMES / r), round(FRAMES / o)) for r, o in zip(like.raw_s, like.ours_s)]}")
    print(f"[bench]   per round (raw, node) p99 ms: "
          f"{[(round(r, 2), round(o, 2)) for r, o in zip(latency.raw_s, latency.ours_s)]}")
    figures = speed.throughput("ingest_msgs_per_s", "raw_pybit_msgs_per_s", FRAMES)
    figures.update(like.throughput("ingest_bytes_msgs_per_s", "raw_pybit_bytes_msgs_per_s", FRAMES))
    # Each latency round returns its p99 in ms (unit 1): ratio = raw p99 / ours.
    figures.update(latency.latency("ingest_p99_ms", "raw_pybit_p99_ms", unit_s=1, digits=2))
    return figures


if __name__ == "__main__":
    for key, value in run().items():
        print(key, value)
