"""AN EXAMPLE STRATEGY - a demonstration of the signal path, not a trading idea.

A moving-average cross on closed 1-minute bars: when the fast average of
closes is above the slow one it wants to be long, below it short. It emits
a `Signal` (with take-profit and stop-loss) to the Executor when that wish
differs from the position it holds, at most once per regime: a refused
signal is not repeated every bar. Holding the opposite side, it first
asks to go flat and enters on a later bar.

It is warmed from the stored history (DuckDB, through `infra.store`), then
follows the StateStore's closed bars, polled with a timed `ask` (it never
touches the WebSocket routers). It signals only while the trading state
is ACTIVE, so its first signal is not thrown away during start-up. Off
unless `strategy.enabled`, and even then only on `strategy.venues`
(default: the simulator).
"""

from __future__ import annotations

import time
from collections import deque
from decimal import Decimal
from typing import Any, Callable, Iterable

import pykka

from actors.base import ActorContext, NodeActor, Role
from infra.store import BarRange, HistoryStore, StoreError
from messages.account import Position
from messages.commands import Direction, Signal
from messages.control import Tick, TradingState, TradingStateChanged
from messages.market import ClosedBar
from messages.queries import GetSnapshot, GetTradingState, StateSnapshot
from messages.types import Side, now_utc, utc_to_ms

INTERVAL = "1"
_MINUTE_MS = 60_000
POLL = "strategy"
STORE_RETRY_S = 5.0


def strategy_enabled(node: Any) -> bool:
    cfg = node.strategy
    return bool(cfg.enabled) and node.venue in cfg.venues and bool(strategy_symbols(node))


def strategy_symbols(node: Any) -> tuple[str, ...]:
    wanted = node.strategy.symbols or tuple(node.symbols)
    return tuple(s for s in wanted if s in node.symbols and INTERVAL in node.symbols[s].intervals)


def _held(position: Position | None) -> Direction | None:
    if position is None or not position.is_open:
        return None
    return Direction.LONG if position.side is Side.BUY else Direction.SHORT


class MaCross:
    """The example's logic, without threads: feed bars and positions, get signals."""

    def __init__(self, symbols: Iterable[str], *, fast: int, slow: int, order_usd: Decimal,
                 take_profit_pct: Decimal, stop_loss_pct: Decimal):
        if not 0 < fast < slow:
            raise ValueError("need 0 < fast < slow")
        self.fast, self.slow = fast, slow
        self._usd = order_usd
        self._tp = take_profit_pct / 100
        self._sl = stop_loss_pct / 100
        self._closes: dict[str, deque[tuple[int, Decimal]]] = {s: deque(maxlen=slow) for s in symbols}
        self._signalled: dict[str, Direction] = {}
        self._evaluated: dict[str, int] = {}

    def warm(self, symbol: str, bars: Iterable[ClosedBar]) -> int:
        self.add_bars(symbol, bars)
        return len(self._closes[symbol])

    def is_warm(self, symbol: str) -> bool:
        return len(self._closes[symbol]) >= self.slow

    def add_bars(self, symbol: str, bars: Iterable[ClosedBar]) -> None:
        buf = self._closes[symbol]
        for bar in sorted(bars, key=lambda b: b.open_ms):
            if bar.interval != INTERVAL or bar.symbol != symbol:
                continue
            if buf and bar.open_ms < buf[-1][0]:
                continue
            if buf and bar.open_ms == buf[-1][0]:
                buf[-1] = (bar.open_ms, bar.close)
            else:
                buf.append((bar.open_ms, bar.close))

    def last_open_ms(self, symbol: str) -> int | None:
        """Open time of the newest closed bar held: the bar the next decision is about."""
        buf = self._closes[symbol]
        return buf[-1][0] if buf else None

    def averages(self, symbol: str) -> tuple[Decimal, Decimal] | None:
        buf = self._closes[symbol]
        if len(buf) < self.slow:
            return None
        closes = [c for _, c in buf]
        return sum(closes[-self.fast:], Decimal(0)) / self.fast, sum(closes, Decimal(0)) / self.slow

    def decide(self, symbol: str, position: Position | None) -> Signal | None:
        """At most one signal per closed bar; None while cold, undecided or already where it wants to be."""
        mas = self.averages(symbol)
        if mas is None:
            return None
        last_ms, last_close = self._closes[symbol][-1]
        if self._evaluated.get(symbol) == last_ms:
            return None
        self._evaluated[symbol] = last_ms
        fast, slow = mas
        wanted = Direction.LONG if fast > slow else Direction.SHORT if fast < slow else None
        held = _held(position)
        if wanted is None or wanted is held:
            if held is not None:
                self._signalled[symbol] = held
            return None
        action = Direction.FLAT if held is not None else wanted
        if self._signalled.get(symbol) is action:
            return None  # said so already in this regime; the Executor's answer stands
        self._signalled[symbol] = action
        reason = f"example MA{self.fast}/MA{self.slow} cross: fast {fast:.6g} slow {slow:.6g}"
        signal_id = f"exma-{symbol[:16]}-{last_ms // _MINUTE_MS}-{action.value[0]}"
        if action is Direction.FLAT:
            return Signal(signal_id=signal_id, symbol=symbol, direction=action, reason=reason)
        exp = Decimal(1).scaleb(last_close.as_tuple().exponent)
        up, down = last_close * (1 + self._tp), last_close * (1 - self._sl)
        if action is Direction.LONG:
            tp, sl = up.quantize(exp), down.quantize(exp)
        else:
            tp, sl = (last_close * (1 - self._tp)).quantize(exp), (last_close * (1 + self._sl)).quantize(exp)
        # `price`: the close it decided on, so the Executor refuses it if the market ran away since.
        return Signal(signal_id=signal_id, symbol=symbol, direction=action, usd=self._usd, price=last_close,
                      take_profit=tp, stop_loss=sl, reason=reason)


class ExampleStrategy(NodeActor):
    role = Role.EXAMPLE_STRATEGY

    def __init__(self, ctx: ActorContext):
        super().__init__(ctx)
        node = ctx.config.node
        cfg = node.strategy
        self._node = node
        self._symbols = strategy_symbols(node)
        self._logic = MaCross(self._symbols, fast=cfg.fast, slow=cfg.slow, order_usd=cfg.order_usd,
                              take_profit_pct=cfg.take_profit_pct, stop_loss_pct=cfg.stop_loss_pct)
        self._poll_s = float(cfg.poll_interval_s)
        self._ask_timeout = float(node.supervisor.ask_timeout_s)
        self._warm_logged: set[str] = set()
        self._next_store_try = 0.0

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {Tick: self._on_tick}

    def on_start(self) -> None:
        super().on_start()
        self._log.info("strategy.started", kind="EXAMPLE moving-average cross (not advice)", symbols=list(self._symbols),
                       fast=self._logic.fast, slow=self._logic.slow, interval=INTERVAL)
        self.every(self._poll_s, lambda: Tick(name=POLL), name=f"timer-{POLL}", first_after_s=min(self._poll_s, 0.5))

    def _on_tick(self, _msg: Tick) -> None:
        try:
            self._poll()
        except Exception as exc:  # noqa: BLE001 - a tell handler must not raise
            self._log.error("strategy.failed", error=repr(exc))

    def _poll(self) -> None:
        cold = [s for s in self._symbols if not self._logic.is_warm(s)]
        if cold and time.monotonic() >= self._next_store_try:
            # The history file is shared with the DbWriter: look at most every few seconds.
            self._next_store_try = time.monotonic() + STORE_RETRY_S
            self._warm_from_store(cold)
        snapshot = self._ask(Role.STATE_STORE, GetSnapshot())
        if not isinstance(snapshot, StateSnapshot):
            return
        for symbol in self._symbols:
            self._logic.add_bars(symbol, snapshot.bars.get((symbol, INTERVAL), ()))
            if self._logic.is_warm(symbol) and symbol not in self._warm_logged:
                self._warm_logged.add(symbol)
                self._log.info("strategy.warm", symbol=symbol, bars=self._logic.slow)
        state = self._ask(Role.PANIC, GetTradingState())
        if not isinstance(state, TradingStateChanged) or state.state is not TradingState.ACTIVE:
            return  # signals only while trading is ACTIVE, so none is thrown away at start-up
        for symbol in self._symbols:
            signal = self._logic.decide(symbol, snapshot.positions.get((symbol, 0)))
            if signal is None:
                continue
            delivered = self._ctx.directory.tell(Role.EXECUTOR, signal)
            self._log.info("strategy.signal", symbol=symbol, signal_id=signal.signal_id, direction=signal.direction.value,
                           usd=str(signal.usd) if signal.usd else None, take_profit=str(signal.take_profit),
                           stop_loss=str(signal.stop_loss), reason=signal.reason, delivered=delivered)

    def _ask(self, role: Role, message: Any) -> Any:
        ref = self._ctx.directory.get(role)
        if ref is None:
            return None
        try:
            return ref.ask(message, timeout=self._ask_timeout)
        except (pykka.ActorDeadError, pykka.Timeout) as exc:
            self._log.warning("strategy.peer_unavailable", peer=role.value, error=repr(exc))
            return None

    def _warm_from_store(self, symbols: list[str]) -> None:
        """The last `slow` closed bars from the history file, if the DbWriter has written them yet."""
        store = HistoryStore.for_node(self._node, owner="example_strategy")
        if not store.exists():
            return
        end = (utc_to_ms(now_utc()) // _MINUTE_MS) * _MINUTE_MS
        window = BarRange(end - (self._logic.slow + 2) * _MINUTE_MS, end)
        try:
            with store.session(timeout_s=1.0) as session:
                for symbol in symbols:
                    self._logic.warm(symbol, session.bars(symbol, INTERVAL, window))
        except StoreError as exc:  # busy or unreadable: try again on the next poll
            self._log.debug("strategy.warm_deferred", error=str(exc))
        finally:
            store.close()
