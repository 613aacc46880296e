"""The trading state owned by Panic: HALTED at start, ACTIVE only when ready AND Risk seeded,
REDUCING while stale, HALTED on a panic or a tripped latch; each change an event and a message
to the Executor and Risk (mocked peers)."""

from __future__ import annotations

import threading

import pykka
import pytest

from actors.base import ActorContext, Directory, Role
from actors.panic import Panic
from actors.trading_state import TradingGate
from infra.config import load_config
from messages.commands import ClosePosition, CloseOutcome, Panic as PanicCommand, PanicReport
from messages.control import ReadinessChanged, RiskStatus, TradingState, TradingStateChanged
from messages.queries import GetTradingState
from tests.fake_gateway import FakeGateway
from tests.helpers import wait_until

H, A, R = TradingState.HALTED, TradingState.ACTIVE, TradingState.REDUCING


def ready(flag: bool, *reasons: str) -> ReadinessChanged:
    return ReadinessChanged(ready=flag, reasons=reasons)


def risk(seeded: bool, latched: bool = False) -> RiskStatus:
    return RiskStatus(seeded=seeded, latched=latched)


def test_gate_starts_halted_and_needs_both_ready_and_risk_seeded():
    gate = TradingGate()
    assert gate.state is H
    assert gate.on_readiness(ready(True)) is None and gate.state is H  # ready alone: still HALTED
    change = gate.on_risk(risk(True))
    assert change is not None and (change.previous, change.state) == (H, A)
    gate = TradingGate()
    assert gate.on_risk(risk(True)) is None and gate.state is H  # seeded alone: still HALTED
    assert gate.on_readiness(ready(True)).state is A


def test_stale_data_before_ever_ready_stays_halted_and_after_ready_is_reducing():
    gate = TradingGate()
    gate.on_risk(risk(True))
    assert gate.on_readiness(ready(False, "kline.1.BTCUSDT stale")) is None and gate.state is H
    gate.on_readiness(ready(True))
    change = gate.on_readiness(ready(False, "kline.1.BTCUSDT stale"))
    assert change.state is R and "kline.1.BTCUSDT stale" in change.reason
    assert gate.on_readiness(ready(True)).state is A


def test_an_orderly_stop_halts_for_good_and_the_sockets_going_down_are_not_stale_data():
    gate = TradingGate()
    gate.on_risk(risk(True))
    gate.on_readiness(ready(True))
    change = gate.on_stopping()
    assert (change.previous, change.state) == (A, H) and change.reason.startswith("node stopping")
    assert gate.on_readiness(ready(False, "public socket down (stopped)")) is None  # not REDUCING
    assert gate.on_readiness(ready(True)) is None and gate.state is H and gate.reason.startswith("node stopping")


@pytest.mark.parametrize("trip", ["panic", "latch", "unseeded"])
def test_panic_latch_or_lost_seed_halts(trip):
    gate = TradingGate()
    gate.on_risk(risk(True))
    gate.on_readiness(ready(True))
    if trip == "panic":
        change = gate.on_panic("operator")
    elif trip == "latch":
        change = gate.on_risk(risk(True, latched=True))
    else:
        change = gate.on_risk(risk(False))
    assert change.state is H and change.previous is A
    if trip == "panic":
        assert "operator" in change.reason
        # A panic halts for the life of the process: fresh data does not re-open trading.
        assert gate.on_readiness(ready(True)) is None and gate.on_risk(risk(True)) is None and gate.state is H


class Recorder(pykka.ThreadingActor):
    def __init__(self, inbox: list):
        super().__init__()
        self.inbox = inbox

    def on_receive(self, message):
        self.inbox.append(message)


@pytest.fixture
def wired(write_config):
    """A Panic actor with recording Executor and Risk peers and a fake gateway."""
    app = load_config(write_config("panic:\n  reconcile_interval_s: 0\n"))
    directory = Directory()
    executor_inbox: list = []
    risk_inbox: list = []
    directory.register(Role.EXECUTOR, Recorder.start(executor_inbox))
    directory.register(Role.RISK, Recorder.start(risk_inbox))
    gw = FakeGateway()
    ref = Panic.start(ActorContext(config=app, directory=directory, gateway=gw))
    return ref, gw, executor_inbox, risk_inbox


def states(inbox):
    return [(m.previous, m.state) for m in inbox if isinstance(m, TradingStateChanged)]


def test_actor_tells_every_change_to_executor_and_risk_and_logs_it(events, wired):
    ref, gw, executor, risk_peer = wired
    assert ref.ask(GetTradingState(), timeout=5).state is H
    ref.tell(ready(True))
    ref.tell(risk(True))
    assert ref.ask(GetTradingState(), timeout=5).state is A
    ref.tell(ready(False, "tickers.BTCUSDT stale"))
    assert ref.ask(GetTradingState(), timeout=5).state is R
    ref.tell(risk(True, latched=True))
    assert ref.ask(GetTradingState(), timeout=5).state is H
    expected = [(H, A), (A, R), (R, H)]
    wait_until(lambda: states(executor) == expected and states(risk_peer) == expected, what="both peers told")
    logged = [(e["previous"], e["state"], e["reason"]) for e in events() if e["event"] == "trading.state_changed"]
    assert [(p, s) for p, s, _ in logged] == [(a.value, b.value) for a, b in expected]
    assert all(reason for _, _, reason in logged)
    assert "daily loss latch" in logged[-1][2]


def test_actor_panic_halts_first_then_flattens_and_answers_the_report(events, wired):
    ref, gw, executor, _ = wired
    ref.tell(ready(True))
    ref.tell(risk(True))
    gw.open("BTCUSDT", "Buy", "1")
    report = ref.ask(PanicCommand(reason="operator"), timeout=30)
    assert isinstance(report, PanicReport) and report.flat
    wait_until(lambda: states(executor)[-1:] == [(A, H)], what="executor told HALTED")
    logged = events()
    halted = next(i for i, e in enumerate(logged) if e["event"] == "trading.state_changed" and e["state"] == "HALTED")
    first_close = next(i for i, e in enumerate(logged) if e["event"] in ("gateway.order_accepted", "close.done"))
    names = [e["event"] for e in logged]
    assert halted < names.index("panic.started") < first_close < names.index("panic.report")
    assert gw.positions["BTCUSDT"].size == 0


def test_actor_answers_a_close_with_a_result(wired):
    ref, gw, _, _ = wired
    gw.open("ETHUSDT", "Sell", "2")
    result = ref.ask(ClosePosition(symbol="ETHUSDT", reason="flat signal", signal_id="sig-9"), timeout=30)
    assert result.outcome is CloseOutcome.CLOSED and result.signal_id == "sig-9"
    creates = [i for i, c in enumerate(gw.calls) if c[0] == "create_order"]
    assert creates and all(i > max(creates) for i, c in enumerate(gw.calls) if c[0] == "get_open_orders")


def test_actor_without_a_gateway_fails_closes_loudly(write_config, events):
    app = load_config(write_config("panic:\n  reconcile_interval_s: 0\n"))
    ref = Panic.start(ActorContext(config=app, directory=Directory(), gateway=None))
    result = ref.ask(ClosePosition(symbol="ETHUSDT", reason="x"), timeout=5)
    assert result.outcome is CloseOutcome.FAILED and "no gateway" in result.error
    report = ref.ask(PanicCommand(reason="x"), timeout=5)
    assert not report.flat and ref.is_alive()


@pytest.mark.parametrize("cap", [R, H])
def test_supervisor_escalation_caps_the_state_while_it_lasts(cap):
    from messages.control import SupervisorEscalated

    gate = TradingGate()
    gate.on_risk(risk(True))
    gate.on_readiness(ready(True))
    change = gate.on_escalation(SupervisorEscalated(active=True, state=cap, reason="ws_public stale: limit"))
    assert change.state is cap and "supervisor escalation" in change.reason
    assert gate.on_readiness(ready(True)) is None and gate.state is cap  # fresh data does not lift it
    assert gate.on_escalation(SupervisorEscalated(active=False, state=cap, reason="calm")).state is A


def test_a_panic_outlives_a_restart_of_the_panic_actor(write_config):
    app = load_config(write_config("panic:\n  reconcile_interval_s: 0\n"))
    ctx = ActorContext(config=app, directory=Directory(), gateway=FakeGateway())
    ref = Panic.start(ctx)
    ref.ask(PanicCommand(reason="operator"), timeout=30)
    ref.stop(block=True, timeout=5)
    replacement = Panic.start(ctx)  # what the Supervisor does after a failure
    replacement.tell(ready(True))
    replacement.tell(risk(True))
    view = replacement.ask(GetTradingState(), timeout=5)
    assert view.state is H and "panic: operator" in view.reason


def test_a_replacement_panic_learns_readiness_from_the_state_store(write_config):
    from messages.queries import GetHealth, HealthReport

    class Store(pykka.ThreadingActor):
        def on_receive(self, message):
            if isinstance(message, GetHealth):
                return HealthReport(ready=True, reasons=(), streams={}, wallet_seeded=True, positions_seeded=True)

    app = load_config(write_config("panic:\n  reconcile_interval_s: 0\n"))
    directory = Directory()
    directory.register(Role.STATE_STORE, Store.start())
    ref = Panic.start(ActorContext(config=app, directory=directory, gateway=FakeGateway()))
    ref.tell(risk(True))
    wait_until(lambda: ref.ask(GetTradingState(), timeout=5).state is A, what="ACTIVE without a readiness flip")
