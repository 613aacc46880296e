"""A seeded chaos run against the whole node, in process, on the simulator.

`ChaosRun(seed)` starts the node's real actor tree (every actor wrapped so a
fault can be injected into its handlers or its next start), the real
gateway and pybit against the simulator, a real DuckDB file, and drives
the simulator's manual clock at `SPEED` x real time so bars close while the
run lasts. A `random.Random(seed)` draws a schedule of faults, from actor
failures to socket drops, REST throttling and a ban; the same seed draws
the same schedule. After the fault phase every fault is lifted and the
node must recover by itself; then the invariants are checked.

Rerun one seed: `CHAOS_SEEDS=17 make chaos` (or `pytest tests/chaos -k 17`).
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pykka

from actors.base import Directory, Role
from actors.supervisor import ChildSpec, Supervisor
from actors.tree import default_children
from infra.bybit import Gateway
from infra.config import AppConfig, load_config
from infra.market_reader import LiveMarketReader
from infra.store import HistoryStore
from infra.store.heal import heal
from infra.store.sync import HistorySync
from messages.commands import Direction, Signal
from messages.control import Ping, TradingState
from messages.queries import GetHealth, GetSnapshot, GetTradingState
from messages.types import Message
from tests.helpers import read_events, wait_until
from tests.integration.conftest import SIM_KEY, SIM_SECRET

SPEED = 20  # simulated seconds per wall second: a 1-minute bar closes every 3 s
SERIES = (("BTCUSDT", "1"), ("BTCUSDT", "5"), ("ETHUSDT", "1"))
MINUTE_MS = 60_000

CONFIG = f"""\
symbols:
  BTCUSDT:
    intervals: ["1", "5"]
  ETHUSDT:
    intervals: ["1"]
supervisor:
  check_interval_s: 0.2
  public_stale_after_s: 2
  private_stale_after_s: 4
  heartbeat_timeout_s: 2
  max_restarts: 40
  restart_window_s: 30
  restart_backoff_s: 0.1
  restart_backoff_max_s: 1
  ask_timeout_s: 3
db_writer:
  # The default: at start the last day is made complete, so a bar lost before the first
  # one the stream delivers is a hole inside the history, which a heal can see and fill.
  catch_up_days: 1
exchange:
  # The simulator's ban lasts about a second; the gateway's pause after a 403 that says
  # nothing of its length (10 minutes by default) would outlast the run.
  ip_ban_pause_s: 2
log:
  metrics_interval_s: 2
shutdown:
  graceful_timeout_s: 10
sim:
  api_key: {SIM_KEY}
  api_secret: {SIM_SECRET}
"""


# --- faults injected into actors ----------------------------------------------------------


class ChaosFault(Message):
    """Told to a chaos-wrapped actor: raise in the handler (the actor dies) or hang in it."""

    kind: Literal["raise", "hang"]
    seconds: float = 0.0


class StartFailures:
    """Make the next `n` starts of a role fail inside on_start (Pykka then never calls on_failure)."""

    def __init__(self) -> None:
        self._left: dict[str, int] = {}
        self._lock = threading.Lock()

    def arm(self, role: str, n: int) -> None:
        with self._lock:
            self._left[role] = self._left.get(role, 0) + n

    def take(self, role: str) -> bool:
        with self._lock:
            if self._left.get(role, 0) > 0:
                self._left[role] -= 1
                return True
            return False

    def clear(self) -> None:
        with self._lock:
            self._left.clear()


def chaotic(actor_class: type, failures: StartFailures, released: threading.Event) -> type:
    """The real actor with two extra doors: a ChaosFault handler and a start that may be made to fail."""

    class Chaotic(actor_class):  # type: ignore[misc, valid-type]
        def handlers(self):
            return {**super().handlers(), ChaosFault: self._chaos}

        def on_start(self) -> None:
            if failures.take(self.role.value):
                raise RuntimeError(f"chaos: {self.role.value} fails to start")
            super().on_start()

        def _chaos(self, fault: ChaosFault) -> None:
            if fault.kind == "raise":
                raise RuntimeError("chaos: injected failure")
            released.wait(fault.seconds)  # the fault itself: this handler hangs

    Chaotic.__name__ = Chaotic.__qualname__ = f"Chaos{actor_class.__name__}"
    return Chaotic


# --- the schedule ---------------------------------------------------------------------------

ACTOR_ROLES = (Role.STATE_STORE, Role.DB_WRITER, Role.RISK, Role.PANIC, Role.EXECUTOR, Role.WS_PRIVATE,
               Role.WS_PUBLIC)
KINDS = ("raise", "hang", "stop", "fail_start", "drop_public", "drop_private", "silence_public", "delay_auth",
         "throttle_orders", "throttle_klines", "ip_ban", "create_timeout", "duplicate_execution", "signal")


@dataclass(frozen=True)
class Fault:
    at_s: float
    kind: str
    role: str | None = None
    seconds: float = 0.0

    def describe(self) -> str:
        who = f" {self.role}" if self.role else ""
        return f"{self.at_s:5.1f}s {self.kind}{who}" + (f" {self.seconds:.1f}s" if self.seconds else "")


def schedule(seed: int, faults: int, span_s: float) -> list[Fault]:
    rng = random.Random(seed)
    plan = []
    for _ in range(faults):
        kind = rng.choice(KINDS)
        role = rng.choice(ACTOR_ROLES).value if kind in ("raise", "hang", "stop", "fail_start") else None
        seconds = round(rng.uniform(2.5, 4.0), 1) if kind in ("hang", "silence_public", "delay_auth") else 0.0
        if kind in ("throttle_orders", "throttle_klines"):
            seconds = round(rng.uniform(0.5, 2.0), 1)
        if kind == "ip_ban":
            seconds = 1.0
        plan.append(Fault(at_s=round(rng.uniform(2.0, span_s), 1), kind=kind, role=role, seconds=seconds))
    return sorted(plan, key=lambda f: f.at_s)


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    seed: int
    faults: list[Fault]
    restarts: int = 0
    escalations: int = 0
    held: dict[str, bool] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _socket_count() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n


class ChaosRun:
    def __init__(self, seed: int, sim: Any, data_dir: Path, *, faults: int, span_s: float):
        self.seed = seed
        self.sim = sim
        self.data_dir = data_dir
        self.plan = schedule(seed, faults, span_s)
        self.span_s = span_s
        self.failures = StartFailures()
        self.released = threading.Event()
        self._stop_clock = threading.Event()
        self.outcome = Outcome(seed=seed, faults=self.plan)

    # --- node -------------------------------------------------------------------------------

    def _app(self) -> AppConfig:
        path = self.data_dir / "config.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"data_dir: {self.data_dir / 'data'}\n" + CONFIG)
        return load_config(path)

    def _children(self) -> list[ChildSpec]:
        from actors import tree

        out = []
        for spec in default_children(self.app.node):
            actor_class = tree.actor_class(spec.role)
            wrapped = chaotic(actor_class, self.failures, self.released)
            out.append(ChildSpec(role=spec.role, start=wrapped.start, restart=spec.restart,
                                 dependents=spec.dependents, socket=spec.socket))
        return out

    def start(self) -> None:
        from infra.logging import configure_logging

        self.app = self._app()
        self.log_path = self.app.node.log_path
        configure_logging(level="INFO", console="off", file_path=self.log_path)
        self.baseline_threads = threading.active_count()
        self.baseline_sockets = _socket_count()
        self.gateway = Gateway.from_config(self.app, self.sim.urls)
        self.directory = Directory()
        reader = LiveMarketReader.from_config(self.app.node, lambda: self.directory.get(Role.STATE_STORE),
                                              self.gateway)
        self.supervisor = Supervisor.start(self.app, self.directory, self._children(), urls=self.sim.urls,
                                           gateway=self.gateway, market_reader=reader)
        self.supervisor.ask(Ping(), timeout=60)
        self.start_ms = self.sim.clock.now_ms()
        self._clock_thread = threading.Thread(target=self._drive_clock, name="chaos-clock", daemon=True)
        self._clock_thread.start()

    def _drive_clock(self) -> None:
        step = 0.05
        while not self._stop_clock.wait(step):
            self.sim.clock.advance(step * SPEED)

    def ask(self, role: Role, query: Any, timeout: float = 3.0) -> Any:
        ref = self.directory.get(role)
        if ref is None:
            return None
        try:
            return ref.ask(query, timeout=timeout)
        except (pykka.ActorDeadError, pykka.Timeout):
            return None

    # --- faults -----------------------------------------------------------------------------

    def inject(self, fault: Fault, n: int) -> None:
        faults = self.sim.faults
        role = Role(fault.role) if fault.role else None
        if fault.kind in ("raise", "hang"):
            self.directory.tell(role, ChaosFault(kind=fault.kind, seconds=fault.seconds))
        elif fault.kind == "stop":
            ref = self.directory.get(role)
            if ref is not None:
                ref.stop(block=False)
        elif fault.kind == "fail_start":
            self.failures.arm(fault.role, 2)
            self.directory.tell(role, ChaosFault(kind="raise"))
        elif fault.kind == "drop_public":
            faults.drop_sockets("public")
        elif fault.kind == "drop_private":
            faults.drop_sockets("private")
        elif fault.kind == "silence_public":
            faults.go_silent("public", seconds=fault.seconds)
        elif fault.kind == "delay_auth":
            faults.delay_private_auth(fault.seconds)
            faults.drop_sockets("private")
        elif fault.kind == "throttle_orders":
            faults.rate_limit("/v5/order/create", seconds=fault.seconds)
        elif fault.kind == "throttle_klines":
            faults.rate_limit("/v5/market/kline", seconds=fault.seconds)
        elif fault.kind == "ip_ban":
            faults.ip_ban(seconds=fault.seconds)
        elif fault.kind == "create_timeout":
            faults.timeout_next_order_create(1, hold_s=2.0)
            self._signal(n, Direction.LONG)
        elif fault.kind == "duplicate_execution":
            faults.duplicate_next_execution(2)
            self._signal(n, Direction.SHORT)
        elif fault.kind == "signal":
            self._signal(n, random.Random(self.seed * 1000 + n).choice(list(Direction)))

    def _signal(self, n: int, direction: Direction) -> None:
        symbol = "BTCUSDT" if n % 2 else "ETHUSDT"
        kw: dict[str, Any] = {} if direction is Direction.FLAT else {"usd": Decimal("100")}
        self.directory.tell(Role.EXECUTOR, Signal(signal_id=f"chaos-{self.seed}-{n}", symbol=symbol,
                                                  direction=direction, reason="chaos test", **kw))

    def run_faults(self) -> None:
        began = time.monotonic()
        pause = threading.Event()
        for n, fault in enumerate(self.plan):
            pause.wait(max(0.0, began + fault.at_s - time.monotonic()))  # the schedule's own clock
            self.inject(fault, n)
        pause.wait(max(0.0, began + self.span_s + 1 - time.monotonic()))
        # Every fault lifted: from here the node must recover by itself.
        self.failures.clear()
        self.released.set()
        self.sim.faults.clear()

    # --- invariants -------------------------------------------------------------------------

    def trading_state(self) -> TradingState | None:
        answer = self.ask(Role.PANIC, GetTradingState())
        return getattr(answer, "state", None)

    def recovered(self, timeout: float = 60.0) -> None:
        def healthy() -> bool:
            health = self.ask(Role.STATE_STORE, GetHealth())
            return bool(health is not None and health.ready and self.trading_state() is TradingState.ACTIVE)

        wait_until(healthy, timeout=timeout, interval=0.2, what=f"seed {self.seed}: ready and ACTIVE again")

    def check_subscriptions(self) -> None:
        """Every desired topic delivers again: fresh in the StateStore's health."""
        desired = {f"tickers.{s}" for s in self.app.node.symbols} | {
            f"kline.{i}.{s}" for s, cfg in self.app.node.symbols.items() for i in cfg.intervals}

        def fresh() -> bool:
            health = self.ask(Role.STATE_STORE, GetHealth())
            if health is None:
                return False
            return all(t in health.streams and not health.streams[t].stale and health.streams[t].age_s is not None
                       for t in desired)

        wait_until(fresh, timeout=20, interval=0.2, what=f"seed {self.seed}: every desired topic fresh")

    def check_account_matches_venue(self) -> None:
        def same() -> bool:
            snap = self.ask(Role.STATE_STORE, GetSnapshot())
            if snap is None:
                return False
            mine = {(p.symbol, p.side, p.size) for p in snap.positions.values() if p.is_open}
            venue = {(p.symbol, p.side, p.size) for p in self.gateway.get_open_positions()}
            my_orders = set(snap.open_orders)
            venue_orders = {o.order_id for o in self.gateway.get_open_orders()}
            return mine == venue and my_orders == venue_orders

        wait_until(same, timeout=20, interval=0.5, what=f"seed {self.seed}: positions and open orders as the venue's")

    def stop(self) -> None:
        # The clock keeps running until the node is down: a clock that stops first leaves every
        # stream silent, and the Supervisor rightly replaces the sockets. The bars owed are those
        # the venue had closed at `end_ms`; the node gets a deadline to hold them all.
        self.end_ms = self.sim.clock.now_ms()
        self.caught_up: str | None = None
        try:
            wait_until(self._holds_bars_closed_by_end, timeout=20, interval=0.1,
                       what=f"seed {self.seed}: every bar closed by the end in the StateStore")
        except AssertionError as exc:
            self.caught_up = str(exc)
        finally:
            try:
                self.supervisor.stop(block=True, timeout=30)
            finally:
                self._stop_clock.set()
                self._clock_thread.join(timeout=10)
                self.gateway.close()

    def _holds_bars_closed_by_end(self) -> bool:
        snap = self.ask(Role.STATE_STORE, GetSnapshot())
        if snap is None:
            return False
        for symbol, interval in SERIES:
            step = MINUTE_MS * int(interval)
            held = snap.bars.get((symbol, interval), ())
            if not held or held[-1].open_ms < self.end_ms // step * step - step:
                return False
        return True

    def close_log(self) -> None:
        from infra.logging import configure_logging

        configure_logging(console="off", file_path=None)

    def check_bars(self) -> None:
        """Every bar the simulator closed during the run is in DuckDB exactly once (after at most one heal)."""
        assert self.caught_up is None, self.caught_up
        store = HistoryStore.for_node(self.app.node, owner="chaos check")
        gateway = Gateway.from_config(self.app, self.sim.urls)
        try:
            first_missing = self._missing(store, gateway)
            if any(first_missing.values()):
                # The venue's clock runs SPEED x ahead of ours, so the heal asks the venue's
                # "now" which bars are closed (the operator's heal asks ours: the same on a real venue).
                heal(store, HistorySync(store, gateway, now_ms=self.sim.clock.now_ms),
                     only=lambda s, i: (s, i) in SERIES)
            missing = self._missing(store, gateway)
            assert not any(missing.values()), f"seed {self.seed}: bars missing after one heal: {missing}"
        finally:
            gateway.close()
            store.close()

    def _missing(self, store: HistoryStore, gateway: Gateway) -> dict[tuple[str, str], list[int]]:
        out = {}
        for symbol, interval in SERIES:
            step = MINUTE_MS * int(interval)
            first = (self.start_ms // step + 1) * step
            last_closed = self.end_ms // step * step - step
            if last_closed < first:
                out[(symbol, interval)] = []
                continue
            with store.session() as s:
                stored = {b.open_ms: b for b in s.bars(symbol, interval)}
            venue = {b.open_ms: b for b in gateway.fetch_klines(symbol, interval, first, last_closed)}
            out[(symbol, interval)] = sorted(
                t for t, b in venue.items()
                if t not in stored or (stored[t].open, stored[t].high, stored[t].low, stored[t].close)
                != (b.open, b.high, b.low, b.close))
        return out

    def check_threads_and_sockets(self) -> None:
        wait_until(lambda: threading.active_count() <= self.baseline_threads, timeout=30, interval=0.2,
                   what=f"seed {self.seed}: threads back to {self.baseline_threads} "
                        f"(now {[t.name for t in threading.enumerate()]})")
        wait_until(lambda: _socket_count() <= self.baseline_sockets, timeout=30, interval=0.2,
                   what=f"seed {self.seed}: sockets back to {self.baseline_sockets}")

    def log(self) -> list[dict]:
        return read_events(self.log_path)
