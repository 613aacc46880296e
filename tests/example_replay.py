"""Replay of the example strategy's first entries on the simulator's price path, without threads or a network.

What decides when a default `run` shows its first accepted example entry is
not a moving-average *cross*: `MaCross.decide` wants to be long while the
fast average is above the slow one and short while below, and a flat node
acts on that wish at the first closed bar it sees once warm. The node warms
from the last day of bars its start-up sync writes, and the strategy speaks
only once trading is ACTIVE, so the first decision falls on the bar that
closed just before the node's first poll after ACTIVE (about 3 s after the
start). What is left to the price path, and so to the start instant:

* a tie (fast == slow exactly): no decision on that bar;
* a refusal: the order size at the current price (qty rounds DOWN to the
  step: 100 USD cannot buy BTC's 0.001 above 100 000), the Risk limits,
  the Executor's price-deviation check, and the venue's check of the stop
  and take-profit against the last price when the order arrives. A refused
  signal is not repeated in its regime, so that symbol then waits for a
  real cross.

This module runs those same pieces (`MaCross`, `order_qty`,
`RiskEngine.check`, `price_deviation_pct`, `protective_levels`,
`create_body`, the simulator's `check_tpsl`) on the simulator's own bars,
prices and funding, for a node starting at any instant. The order is judged
at every turning point of the simulator's price path in the two minutes
after the decided bar closed (a decision may be made on a bar a minute old,
while the newest kline is still on its way); between turning points the
last and mark prices move linearly, so the extremes are among those points.

`python -m tests.example_replay` prints the measurement over many start
instants; `tests/unit/test_example_first_entry.py` asserts the guarantee.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import numpy as np

from actors.example_strategy import INTERVAL, MaCross, strategy_symbols
from actors.executor import Blocked, order_qty, price_deviation_pct, protective_levels
from actors.risk import RiskEngine
from infra.bybit.errors import OrderRefused
from infra.bybit.instruments import Instrument
from infra.bybit.models import OrderRequest, OrderType
from infra.bybit.order_body import create_body
from infra.config import NodeConfig, load_config
from infra.market_reader import Quote
from infra.sim.history import bars_for, rest_row, select_opens
from infra.sim.instruments import instrument_for
from infra.sim.market import DAY_MIN, FUNDING_MS, MARK_BASIS, MIN_MS, SymbolModel
from infra.sim.rest import instrument_info
from infra.sim.tpsl import check_tpsl
from infra.sim.wire import SimError
from infra.store.risk_state import RiskDay
from messages.commands import Direction, Signal
from messages.control import TradingState
from messages.market import ClosedBar
from messages.trading import OrderIntent, PortfolioSnapshot, RiskCheck
from messages.types import Side, ms_to_utc

REPO = Path(__file__).resolve().parent.parent
# How long after the decided bar closed the order may reach the venue (see the module docstring).
ORDER_HORIZON_MS = 2 * MIN_MS
_KNOTS = (0, 20_000, 40_000)


@dataclass(frozen=True)
class Outcome:
    """One decision of one symbol: `signal` None is a tie; `refused` names the check that stopped it."""

    symbol: str
    bar_open_ms: int
    signal: Signal | None
    refused: str | None

    @property
    def accepted(self) -> bool:
        return self.signal is not None and self.refused is None


class ExampleReplay:
    """The default node's example strategy against the simulator's market, one start instant at a time."""

    def __init__(self, node: NodeConfig):
        self.node = node
        self.symbols = strategy_symbols(node)
        seed = node.sim.seed
        self.models = {s: SymbolModel(instrument_for(s, seed), seed) for s in self.symbols}
        # The node's view of each instrument, from the simulator's own instruments-info row.
        self.instruments = {s: Instrument.from_bybit(instrument_info(m.inst)) for s, m in self.models.items()}
        self.balance = Decimal(str(node.sim.starting_balance_usdt))

    @classmethod
    def default(cls) -> ExampleReplay:
        return cls(load_config(REPO / "config.yaml").node)

    def logic(self) -> MaCross:
        cfg = self.node.strategy
        return MaCross(self.symbols, fast=cfg.fast, slow=cfg.slow, order_usd=cfg.order_usd,
                       take_profit_pct=cfg.take_profit_pct, stop_loss_pct=cfg.stop_loss_pct)

    def closed_bars(self, symbol: str, first_open_ms: int, count: int) -> list[ClosedBar]:
        """Closed 1-minute bars as the node stores them: the simulator's kline rows, parsed by the node's parser."""
        model = self.models[symbol]
        last_open = first_open_ms + (count - 1) * MIN_MS
        now = last_open + MIN_MS  # every bar asked for has closed
        opens = select_opens(INTERVAL, now, model.inst.launch_ms, first_open_ms, last_open, count, ())
        rows = [rest_row(model, bar) for bar in bars_for(model, INTERVAL, opens, now)]
        return [ClosedBar.from_rest_row(symbol, INTERVAL, row) for row in reversed(rows)]

    def first_entries(self, decide_ms: int, max_bars: int = 30) -> dict[str, tuple[int | None, list[Outcome]]]:
        """Per symbol: bars after the first decision until an accepted entry (None: not within max_bars).

        `decide_ms`: when the warm, ACTIVE strategy first decides. It is warmed
        with the `slow` bars closed by then, then follows one bar a minute,
        flat all along (a refused entry leaves it flat).
        """
        logic = self.logic()
        first_bar = decide_ms // MIN_MS * MIN_MS - MIN_MS
        out: dict[str, tuple[int | None, list[Outcome]]] = {}
        for symbol in self.symbols:
            bars = self.closed_bars(symbol, first_bar - (logic.slow - 1) * MIN_MS, logic.slow + max_bars)
            logic.warm(symbol, bars[:logic.slow])
            outcomes: list[Outcome] = []
            found = None
            for k in range(max_bars):
                if k:
                    logic.add_bars(symbol, [bars[logic.slow - 1 + k]])
                outcome = self.judge(logic, symbol)
                if outcome is None:
                    continue  # said so already in this regime: nothing reaches the Executor
                outcomes.append(outcome)
                if outcome.accepted:
                    found = k
                    break
            out[symbol] = (found, outcomes)
        return out

    def judge(self, logic: MaCross, symbol: str) -> Outcome | None:
        """The decision on the newest bar `logic` holds; None when it stays silent because it said so already."""
        bar_open = logic.last_open_ms(symbol)
        assert bar_open is not None
        averages = logic.averages(symbol)
        signal = logic.decide(symbol, None)
        if signal is not None:
            return Outcome(symbol, bar_open, signal, self.refusal(signal, bar_open + MIN_MS))
        if averages is not None and averages[0] == averages[1]:
            return Outcome(symbol, bar_open, None, "tie")
        return None

    def refusal(self, signal: Signal, closed_ms: int) -> str | None:
        """The first check an entry fails when it reaches the Executor at any time in the horizon; None: none."""
        model = self.models[signal.symbol]
        for t in self._order_times(closed_ms):
            reason = self._refusal_at(signal, model, t)
            if reason is not None:
                return reason
        return None

    @staticmethod
    def _order_times(closed_ms: int) -> list[int]:
        end = closed_ms + ORDER_HORIZON_MS
        return [m + off for m in range(closed_ms, end, MIN_MS) for off in _KNOTS] + [end]

    def _refusal_at(self, signal: Signal, model: SymbolModel, t: int) -> str | None:
        inst_sim, inst = model.inst, self.instruments[signal.symbol]
        last_ticks = model.last_ticks(t)
        last, mark = inst_sim.price_dec(last_ticks), inst_sim.price_dec(model.mark_ticks(t, last_ticks))
        funding = Decimal(model.funding_rate_e6((t // FUNDING_MS + 1) * FUNDING_MS)).scaleb(-6)
        quote = Quote(signal.symbol, last, mark, funding, None, "ws", 0.0)
        risk_cfg = self.node.risk
        try:
            qty = order_qty(signal, last, inst, risk_cfg.default_order_usd)
        except Blocked as exc:
            return f"size: {exc}"
        side = Side.BUY if signal.direction is Direction.LONG else Side.SELL
        decision = self._risk(t).check(RiskCheck(
            signal_id=signal.signal_id, intent=OrderIntent(symbol=signal.symbol, side=side, qty=qty, price=last),
            portfolio=self._portfolio(t), trading_state=TradingState.ACTIVE, funding_rate=funding))
        if not decision.allowed:
            return f"risk {decision.check}: {decision.reason}"
        deviation, against = price_deviation_pct(quote, signal.price)
        if deviation > risk_cfg.max_price_deviation_pct:
            return f"price_deviation: {deviation:.4f} % off the {against}"
        tp, sl = protective_levels(signal, side, last, risk_cfg.default_take_profit_pct, risk_cfg.default_stop_loss_pct)
        request = OrderRequest(symbol=signal.symbol, side=side, order_type=OrderType.MARKET, qty=qty,
                               order_link_id="x-replay", reference_price=last, take_profit=tp, stop_loss=sl)
        try:
            body, _, _ = create_body(request, inst)
        except OrderRefused as exc:
            return f"order body: {exc}"
        tp_t = inst_sim.to_ticks(Decimal(body["takeProfit"])) if "takeProfit" in body else None
        sl_t = inst_sim.to_ticks(Decimal(body["stopLoss"])) if "stopLoss" in body else None
        try:
            check_tpsl(side.value, last_ticks, tp_t, sl_t)
        except SimError as exc:
            return f"venue tp/sl: {exc}"
        return None

    def _risk(self, t: int) -> RiskEngine:
        now = ms_to_utc(t)
        engine = RiskEngine(self.node.risk, clock=lambda: now)
        engine.tracker.seed(RiskDay(day=now.date(), anchor_balance=self.balance, peak_equity=self.balance,
                                    latched=False, latch_reason=None, latched_at=None, seed_source="venue"))
        engine.trading_state = TradingState.ACTIVE
        return engine

    def _portfolio(self, t: int) -> PortfolioSnapshot:
        # A fresh simulator account: the whole starting balance, nothing open.
        b = self.balance
        return PortfolioSnapshot(b, b, b, ())


@dataclass
class Sweep:
    """Every decision minute of a span: per symbol, why its first decision would not be accepted (0: accepted)."""

    first_minute: int
    reasons: dict[str, np.ndarray]  # int8 per decision minute: one of the *_CODE values

    def accepted(self, symbol: str) -> np.ndarray:
        return self.reasons[symbol] == ACCEPTED

    def bars_to_first_entry(self) -> np.ndarray:
        """Per decision minute: 0 when some symbol's first decision is accepted, 1 when only after a tie, else 2 (> 1 bar).

        A symbol refused on its first decision stays silent for that regime,
        so only a tie gets a second look one bar later.
        """
        now = np.zeros(len(next(iter(self.reasons.values()))) - 1, dtype=bool)
        later = np.zeros_like(now)
        for code in self.reasons.values():
            now |= code[:-1] == ACCEPTED
            later |= (code[:-1] == TIE) & (code[1:] == ACCEPTED)
        return np.where(now, 0, np.where(later, 1, 2))


ACCEPTED, TIE, SIZE, STOP_OR_DEVIATION = 0, 1, 2, 3


def sweep(replay: ExampleReplay, first_minute: int, minutes: int, chunk: int = 30 * DAY_MIN) -> Sweep:
    """`ExampleReplay.judge` for EVERY decision minute of a span, on the simulator's minute arrays at once.

    The same conditions in integer/float array form (the sampled replay runs
    the real code and agrees): a tie is slow * sum(fast closes) == fast *
    sum(slow closes) in ticks, exactly what equal Decimal averages are; the
    size rounds down to at least the minimum quantity and clears the minimum
    notional at every price of the order horizon; the stop and the
    price-deviation limit hold against every price of the horizon (the
    high/low of the two minutes after the decided close), the mark price's
    largest basis included. Risk's limits depend on the price only through
    the notional, which rounding down keeps at or below `order_usd`.
    """
    cfg, risk = replay.node.strategy, replay.node.risk
    fast, slow = cfg.fast, cfg.slow
    sl = float(cfg.stop_loss_pct) / 100
    dev = float(risk.max_price_deviation_pct) / 100 - MARK_BASIS
    reasons = {}
    for symbol, model in replay.models.items():
        inst = replay.instruments[symbol]
        tick = float(model.inst.tick)
        max_price = float(cfg.order_usd / inst.min_qty)
        min_price = float(inst.min_notional / inst.min_qty)
        parts = []
        for m0 in range(first_minute, first_minute + minutes, chunk):
            n = min(chunk, first_minute + minutes - m0)
            # Decision minute m decides on the bars up to m-1 and orders during minutes m and m+1.
            _, h, l, c, _, _ = model.minute_arrays(m0 - slow, m0 + n + 2)
            csum = np.concatenate([[0], np.cumsum(c)])
            idx = np.arange(slow, slow + n)  # index of minute m in the arrays
            sum_fast = csum[idx] - csum[idx - fast]
            sum_slow = csum[idx] - csum[idx - slow]
            close = c[idx - 1].astype(np.float64)
            hi = np.maximum(h[idx], h[idx + 1]).astype(np.float64)
            lo = np.minimum(l[idx], l[idx + 1]).astype(np.float64)
            code = np.full(n, ACCEPTED, dtype=np.int8)
            move = np.maximum(hi / close - 1, 1 - lo / close)
            # The stop is one tick nearer after rounding at worst.
            code[(move + tick / close >= sl) | (move >= dev)] = STOP_OR_DEVIATION
            code[(hi * tick > max_price) | (lo * tick < min_price)] = SIZE
            code[slow * sum_fast == fast * sum_slow] = TIE
            parts.append(code)
        reasons[symbol] = np.concatenate(parts)
    return Sweep(first_minute, reasons)


def start_instants(n_random: int, seed: int = 1) -> list[int]:
    """Every minute of the day around a month/year boundary, plus random instants from 2024 to 2032."""
    year_end = int(datetime(2026, 12, 31, 12, tzinfo=timezone.utc).timestamp() * 1000)
    fixed = [year_end + i * MIN_MS + 17_000 for i in range(1440)]
    lo = int(datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
    hi = int(datetime(2032, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
    rng = random.Random(seed)
    return fixed + [rng.randrange(lo, hi) for _ in range(n_random)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--random", type=int, default=2000, help="random start instants on top of a whole day")
    ap.add_argument("--startup-s", type=float, default=3.0, help="start to first ACTIVE decision (measured: ~3 s)")
    ap.add_argument("--sweep-years", type=int, default=12, help="every minute from 2024-01-01 on, this many years")
    args = ap.parse_args()
    replay = ExampleReplay.default()
    instants = start_instants(args.random)
    began = time.perf_counter()
    firsts: Counter[int] = Counter()
    first_outcome: dict[str, Counter[str]] = {s: Counter() for s in replay.symbols}
    for t0 in instants:
        result = replay.first_entries(t0 + int(args.startup_s * 1000))
        ks = [k for k, _ in result.values() if k is not None]
        firsts[min(ks) if ks else -1] += 1
        for symbol, (_, outcomes) in result.items():
            head = outcomes[0]
            first_outcome[symbol]["accepted" if head.accepted else (head.refused or "?").split(":")[0]] += 1
    print(f"real code, {len(instants)} start instants (every minute of 2026-12-31 12:00 .. 2027-01-01 12:00 "
          f"and {args.random} random in 2024..2031), {time.perf_counter() - began:.1f} s")
    print("  bars after the first decision until the first accepted entry, any symbol:", dict(sorted(firsts.items())))
    for symbol in replay.symbols:
        print(f"  {symbol} first decision: {dict(first_outcome[symbol])}")
    first = int(datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp() * 1000) // MIN_MS
    end = int(datetime(2024 + args.sweep_years, 1, 1, tzinfo=timezone.utc).timestamp() * 1000) // MIN_MS
    began = time.perf_counter()
    result = sweep(replay, first, end - first)
    names = {ACCEPTED: "accepted", TIE: "tie", SIZE: "size", STOP_OR_DEVIATION: "stop/deviation"}
    print(f"every decision minute 2024-01-01 .. {2024 + args.sweep_years}-01-01 ({end - first} minutes), "
          f"{time.perf_counter() - began:.1f} s")
    both_tie = np.ones(end - first, dtype=bool)
    for symbol, code in result.reasons.items():
        counts = np.bincount(code, minlength=4)
        both_tie &= code == TIE
        print(f"  {symbol} first decision:", {names[i]: int(n) for i, n in enumerate(counts) if n})
    print("  minutes where every symbol ties:", int(both_tie.sum()))
    print("  bars after the first decision until the first accepted entry, any symbol:",
          dict(enumerate(np.bincount(result.bars_to_first_entry(), minlength=3).tolist())))


if __name__ == "__main__":
    main()
