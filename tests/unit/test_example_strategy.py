"""The example strategy: MA-cross decisions, warm-up from the DuckDB history, signals only while ACTIVE
(actor with mocked StateStore, Panic and Executor peers)."""

from __future__ import annotations

from decimal import Decimal
from types import MappingProxyType

import pykka
import pytest

from actors.base import ActorContext, Directory, Role
from actors.example_strategy import ExampleStrategy, MaCross
from infra.config import load_config
from infra.store import HistoryStore
from messages.commands import Direction, Signal
from messages.control import TradingState, TradingStateChanged
from messages.market import BarSource, ClosedBar
from messages.queries import GetSnapshot, GetTradingState, StateSnapshot
from messages.types import ms_to_utc, now_utc, utc_to_ms
from tests.fake_gateway import position
from tests.helpers import wait_until

MIN = 60_000


T0 = 1_767_225_600_000  # 2026-01-01T00:00Z


def bars(symbol: str, closes: list[str], end_ms: int | None = None, start_ms: int | None = None) -> list[ClosedBar]:
    """Closes from `start_ms` on, or ending just before `end_ms` (default: the current minute)."""
    if start_ms is None:
        end = end_ms if end_ms is not None else (utc_to_ms(now_utc()) // MIN) * MIN
        start_ms = end - len(closes) * MIN
    start = start_ms
    out = []
    for i, c in enumerate(closes):
        price = Decimal(c)
        out.append(ClosedBar(symbol=symbol, interval="1", open_time=ms_to_utc(start + i * MIN), open=price,
                             high=price, low=price, close=price, volume=Decimal(1), turnover=price,
                             source=BarSource.REST))
    return out


def logic() -> MaCross:
    return MaCross(["BTCUSDT"], fast=2, slow=4, order_usd=Decimal("100"), take_profit_pct=Decimal("1"),
                   stop_loss_pct=Decimal("0.5"))


def test_cold_until_slow_bars_then_follows_the_regime_once():
    ma = logic()
    end = (utc_to_ms(now_utc()) // MIN) * MIN
    ma.warm("BTCUSDT", bars("BTCUSDT", ["100.0", "100.0", "101.0"], end_ms=end - MIN))
    assert ma.decide("BTCUSDT", None) is None  # three of four bars: cold
    # The same `end` (not a second reading of the clock, which may be a minute on): the four bars
    # overlap the three warm ones, as the live bars of a warmed strategy do.
    ma.add_bars("BTCUSDT", bars("BTCUSDT", ["100.0", "100.0", "101.0", "102.0"], end_ms=end))
    assert ma.last_open_ms("BTCUSDT") == end - MIN  # the bar the decision is about
    sig = ma.decide("BTCUSDT", None)
    assert isinstance(sig, Signal) and sig.direction is Direction.LONG and sig.usd == Decimal("100")
    assert sig.stop_loss == Decimal("101.5") and sig.take_profit == Decimal("103.0")  # 0.5 % / 1 % of the close
    assert sig.price == Decimal("102.0")  # the close it decided on: the Executor checks the market against it
    assert ma.decide("BTCUSDT", None) is None  # one decision per closed bar


def test_no_repeat_in_the_same_regime_and_flat_before_reversing():
    ma = logic()
    series = ["100.0", "100.0", "101.0", "102.0"]
    ma.warm("BTCUSDT", bars("BTCUSDT", series, start_ms=T0))
    assert ma.decide("BTCUSDT", None).direction is Direction.LONG
    series += ["103.0"]
    ma.add_bars("BTCUSDT", bars("BTCUSDT", series, start_ms=T0))
    assert ma.decide("BTCUSDT", None) is None  # still long, the Executor's answer stands: no repeat
    series += ["99.0", "95.0"]
    ma.add_bars("BTCUSDT", bars("BTCUSDT", series, start_ms=T0))
    held_long = position("BTCUSDT", "Buy", "0.01")
    flat = ma.decide("BTCUSDT", held_long)
    assert flat.direction is Direction.FLAT and flat.take_profit is None
    series += ["94.0"]
    ma.add_bars("BTCUSDT", bars("BTCUSDT", series, start_ms=T0))
    short = ma.decide("BTCUSDT", None)
    assert short.direction is Direction.SHORT and short.take_profit < Decimal("94.0") < short.stop_loss


class Answers(pykka.ThreadingActor):
    def __init__(self, answers: dict, inbox: list):
        super().__init__()
        self.answers, self.inbox = answers, inbox

    def on_receive(self, message):
        self.inbox.append(message)
        answer = self.answers.get(type(message))
        return answer() if callable(answer) else answer


def snapshot(live_bars=()) -> StateSnapshot:
    return StateSnapshot(tickers={}, klines={}, bars=MappingProxyType({("BTCUSDT", "1"): tuple(live_bars)}),
                         wallet=None, positions={}, open_orders={}, recent_executions=(), received_at={}, taken_at=0.0)


@pytest.fixture
def app(write_config):
    return load_config(write_config(
        "symbols:\n  BTCUSDT:\n    intervals: ['1']\n"
        "strategy:\n  enabled: true\n  fast: 2\n  slow: 4\n  poll_interval_s: 0.05\n"
    ))


def test_actor_warms_from_the_history_file_and_signals_only_while_active(app, events):
    HistoryStore.for_node(app.node).write_bars(bars("BTCUSDT", ["100.0", "100.0", "101.0", "102.0"]))
    state = {"now": TradingState.HALTED}
    directory = Directory()
    executor: list = []
    directory.register(Role.STATE_STORE, Answers.start({GetSnapshot: snapshot}, []))
    directory.register(Role.PANIC, Answers.start(
        {GetTradingState: lambda: TradingStateChanged(state=state["now"], previous=TradingState.HALTED, reason="t")},
        []))
    directory.register(Role.EXECUTOR, Answers.start({}, executor))
    ExampleStrategy.start(ActorContext(config=app, directory=directory))
    wait_until(lambda: any(e["event"] == "strategy.warm" for e in events()), what="warm from the history file")
    assert executor == []  # HALTED: nothing is said (and nothing is used up)
    state["now"] = TradingState.ACTIVE
    (sig,) = wait_until(lambda: executor, what="a signal once ACTIVE")
    assert isinstance(sig, Signal) and sig.direction is Direction.LONG and sig.symbol == "BTCUSDT"
    logged = [e for e in events() if e["event"] == "strategy.signal"]
    assert [(e["signal_id"], e["delivered"]) for e in logged] == [(sig.signal_id, True)]
