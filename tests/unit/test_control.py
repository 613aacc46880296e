"""The control channel with a fake Executor and a fake Panic peer: files in, messages to actors, replies out."""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal
from types import SimpleNamespace

import pykka
import pytest

from actors.base import Directory, Role
from actors.control import _outcome, node_handler
from infra.config import load_config
from infra.control import ControlTimeout, ControlWatcher, control_dir, send
from messages.commands import Direction, Panic, PanicReport, Signal
from messages.trading import ExecutionOutcome, ExecutionResult, GetExecution
from messages.types import Side
from tests.helpers import wait_until


class FakeExecutor(pykka.ThreadingActor):
    results: dict = {}  # signal_id -> what GetExecution answers
    busy_s = 0.0  # how long a signal keeps it busy (a venue call)

    def __init__(self, inbox: list):
        super().__init__()
        self.inbox = inbox

    def on_receive(self, message):
        if isinstance(message, GetExecution):
            return self.results.get(message.signal_id)
        time.sleep(self.busy_s)
        self.inbox.append(message)


class FakePanic(pykka.ThreadingActor):
    def __init__(self, inbox: list):
        super().__init__()
        self.inbox = inbox

    def on_receive(self, message):
        self.inbox.append(message)
        return PanicReport(reason=message.reason, started_at="2026-01-01T00:00:00Z", flat=True, time_to_flat_s=0.2,
                           duration_s=0.2, closed=(), orders_cancelled=1, still_open_positions=(),
                           still_open_orders=(), dcp="window tightened to 3 s", rounds=1)


@pytest.fixture
def node(write_config, tmp_path):
    app = load_config(write_config(""))
    directory = Directory()
    executor_inbox: list = []
    panic_inbox: list = []
    directory.register(Role.EXECUTOR, FakeExecutor.start(executor_inbox))
    directory.register(Role.PANIC, FakePanic.start(panic_inbox))
    watcher = ControlWatcher(app.node.data_dir, "sim", node_handler(directory, app.node), poll_s=0.01).start()
    yield app.node.data_dir, executor_inbox, panic_inbox
    watcher.stop()


def test_a_signal_command_reaches_the_executor_as_a_signal(node, events):
    data_dir, executor, _ = node
    answer = send(data_dir, "sim", "signal", {"symbol": "BTCUSDT", "direction": "long", "usd": "150"}, timeout_s=5)
    assert answer["ok"] is True
    (signal,) = wait_until(lambda: executor, what="the executor got the signal")
    assert isinstance(signal, Signal) and signal.direction is Direction.LONG and str(signal.usd) == "150"
    assert signal.signal_id == answer["signal_id"]
    assert [e["command"] for e in events() if e["event"] == "control.command"] == ["signal"]


def test_what_a_signal_became_is_answered_with_its_outcome_and_fill(node, monkeypatch):
    data_dir, _, _ = node
    monkeypatch.setattr(FakeExecutor, "results", {"s-1": ExecutionResult(
        signal_id="s-1", symbol="BTCUSDT", direction="long", outcome=ExecutionOutcome.FILLED, reason="filled",
        order_link_id="x-1", side=Side.BUY, qty=Decimal("0.002"), filled_qty=Decimal("0.002"),
        avg_price=Decimal("54446.1"), price_source="executions", stop_loss=Decimal("54174.96"))})
    answer = send(data_dir, "sim", "signal_result", {"signal_id": "s-1"}, timeout_s=5)
    assert answer["ok"] and answer["seen"] and answer["final"]
    assert answer["result"] == {"outcome": "filled", "reason": "filled", "symbol": "BTCUSDT", "direction": "long",
                                "side": "Buy", "order_link_id": "x-1", "qty": "0.002", "filled_qty": "0.002",
                                "avg_price": "54446.1", "price_source": "executions", "reduce_only": False,
                                "stop_loss": "54174.96"}
    unseen = send(data_dir, "sim", "signal_result", {"signal_id": "never-sent"}, timeout_s=5)
    assert unseen == {"ok": True, "signal_id": "never-sent", "seen": False}


def test_an_invalid_signal_is_refused_with_the_reason_and_reaches_nobody(node):
    data_dir, executor, _ = node
    answer = send(data_dir, "sim", "signal", {"symbol": "btc", "direction": "long", "usd": "-1"}, timeout_s=5)
    assert answer["ok"] is False and "symbol" in answer["error"] and "usd" in answer["error"]
    assert executor == []


def test_a_panic_command_is_asked_of_panic_and_answers_its_report(node):
    data_dir, _, panic = node
    answer = send(data_dir, "sim", "panic", {"reason": "operator test"}, timeout_s=5)
    assert answer["ok"] is True and answer["report"]["flat"] is True and answer["report"]["orders_cancelled"] == 1
    assert [type(m) for m in panic] == [Panic] and panic[0].reason == "operator test"


def test_a_malformed_command_file_gets_an_error_reply(node):
    data_dir, executor, panic = node
    base = control_dir(data_dir, "sim")
    (base / "requests" / "bad.json").write_text("{not json")
    reply = wait_until(lambda: (base / "replies" / "bad.json").exists() and base / "replies" / "bad.json")
    assert json.loads(reply.read_text())["ok"] is False
    assert executor == [] and panic == []


def test_without_a_watcher_the_command_times_out_and_is_withdrawn(tmp_path):
    started = time.monotonic()
    with pytest.raises(ControlTimeout) as info:
        send(tmp_path, "sim", "panic", {}, timeout_s=0.3)
    assert info.value.taken is False and time.monotonic() - started < 3
    assert list((control_dir(tmp_path, "sim") / "requests").glob("*.json")) == []  # nothing left to act on later


@pytest.mark.timeout(10)
def test_a_command_nobody_picks_up_is_withdrawn_at_the_pickup_time_not_the_whole_timeout(tmp_path):
    """A panic's timeout is its whole procedure (deadline + 15 s): a dead watcher must not cost that."""
    with pytest.raises(ControlTimeout) as info:
        send(tmp_path, "sim", "panic", {}, timeout_s=300, pickup_s=0.3)
    assert info.value.taken is False and "within 0.3 s" in str(info.value)
    assert list((control_dir(tmp_path, "sim") / "requests").glob("*.json")) == []


def test_a_command_taken_in_time_is_waited_for_past_the_pickup_time(tmp_path):
    slow = ControlWatcher(tmp_path, "sim", lambda command, args: time.sleep(0.6) or {"ok": True}, poll_s=0.01).start()
    try:
        assert send(tmp_path, "sim", "panic", {}, timeout_s=5, pickup_s=0.2) == {"ok": True}
    finally:
        slow.stop()


def test_the_signal_command_waits_for_a_final_outcome_and_says_so_when_none_comes(node, monkeypatch):
    data_dir, _, _ = node
    where = SimpleNamespace(data_dir=data_dir, venue=SimpleNamespace(value="sim"))
    pending = ExecutionResult(signal_id="s-2", symbol="BTCUSDT", direction="long", outcome=ExecutionOutcome.PENDING,
                              order_link_id="x-2")
    monkeypatch.setattr(FakeExecutor, "results", {"s-2": pending})
    waited = _outcome(where, "s-2", wait_s=0.6)
    assert waited["ok"] is False and waited["outcome"] == "pending" and "0.6 s" in waited["error"]
    assert _outcome(where, "never-sent", wait_s=0.3)["outcome"] == "queued"
    # Final on a later poll: the answer is the outcome, and ok only for what is done.
    results = {"s-2": pending}
    monkeypatch.setattr(FakeExecutor, "results", results)
    threading.Timer(0.3, lambda: results.__setitem__("s-2", ExecutionResult(
        signal_id="s-2", symbol="BTCUSDT", direction="long", outcome=ExecutionOutcome.REJECTED,
        reason="retCode 10006"))).start()
    rejected = _outcome(where, "s-2", wait_s=10)
    assert rejected == {"ok": False, "signal_id": "s-2", "outcome": "rejected", "reason": "retCode 10006",
                        "symbol": "BTCUSDT", "direction": "long", "reduce_only": False}


def test_the_signal_command_keeps_waiting_while_the_executor_is_busy_with_a_venue_call(node, monkeypatch):
    """An unknown create is looked up by its orderLinkId for seconds, on the Executor's thread: the
    outcome ask times out meanwhile. That is a busy Executor, not a failed signal: keep polling."""
    import actors.control as control

    data_dir, executor, _ = node
    monkeypatch.setattr(control, "RESULT_ASK_S", 0.1)
    monkeypatch.setattr(FakeExecutor, "busy_s", 0.8)
    monkeypatch.setattr(FakeExecutor, "results", {"s-busy": ExecutionResult(
        signal_id="s-busy", symbol="BTCUSDT", direction="long", outcome=ExecutionOutcome.UNKNOWN,
        reason="order not found within 5 s")})
    where = SimpleNamespace(data_dir=data_dir, venue=SimpleNamespace(value="sim"))
    sent = send(data_dir, "sim", "signal", {"signal_id": "s-busy", "symbol": "BTCUSDT", "direction": "long"},
                timeout_s=5)
    assert sent["ok"]
    assert _outcome(where, "s-busy", wait_s=10)["outcome"] == "unknown"
    assert executor  # it really was busy with the signal meanwhile
    monkeypatch.setattr(FakeExecutor, "busy_s", 5.0)
    send(data_dir, "sim", "signal", {"signal_id": "s-long", "symbol": "BTCUSDT", "direction": "long"}, timeout_s=5)
    still = _outcome(where, "s-long", wait_s=0.5)
    assert still["ok"] is False and still["outcome"] == "pending" and "still busy" in still["error"]
