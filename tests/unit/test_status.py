"""The status file: what peers answer, unknown for what they do not, never a live look for a dead node."""

from __future__ import annotations

import json
import os
import time
from decimal import Decimal

import pykka
import pytest

from actors.state_store import LiveState
from infra.presence import NodePresence
from infra.status import StatusPublisher, StatusUnavailable, read_live_status, render, status_path
from messages import Position, Ticker
from messages.control import TradingState, TradingStateChanged
from messages.queries import GetHealth, GetSnapshot, GetTradingState, GetWriterStats, WriterStats
from tests.conftest import SAMPLES


class Peer:
    def __init__(self, answers=None, timeout=False):
        self.answers = answers or {}
        self.timeout = timeout
        self.asked: list[str] = []

    def ask(self, message, timeout=None):
        assert timeout is not None
        self.asked.append(type(message).__name__)
        if self.timeout:
            raise pykka.Timeout("busy")
        return self.answers.get(type(message))


def state_peer() -> Peer:
    state = LiveState()
    state.on_ticker(Ticker.from_bybit(json.loads((SAMPLES / "4.7-tickers-symbol-linear-1.json").read_text())))
    state.positions[("BTCUSDT", 0)] = Position(symbol="BTCUSDT", side="Buy", size=Decimal("0.1"),
                                               entryPrice="50000", leverage="10")
    return Peer({GetHealth: state.health(), GetSnapshot: state.snapshot()})


def test_publishes_what_peers_answer_and_unknown_for_the_rest(tmp_path):
    state = state_peer()
    panic = Peer()  # does not handle GetTradingState (answers None)
    writer = Peer(timeout=True)
    pub = StatusPublisher(tmp_path, "sim", state_store=lambda: state, panic=lambda: panic, db_writer=lambda: writer)
    assert pub.publish()
    status = json.loads(status_path(tmp_path, "sim").read_text())
    assert status["pid"] == os.getpid() and status["venue"] == "sim"
    assert status["ready"] is False and "wallet not seeded" in status["not_ready_reasons"]
    assert status["trading_state"] is None and status["db_writer"] is None
    (pos,) = status["positions"]
    assert pos["symbol"] == "BTCUSDT" and pos["mark_price"] is not None
    assert {"unrealised_pnl_usdt", "pnl_pct_of_margin", "pnl_pct_of_notional"} <= set(pos)
    # A peer that said "not handled" is not asked again (its log is not flooded); a busy one is.
    pub.publish()
    assert panic.asked == ["GetTradingState"] and writer.asked == ["GetWriterStats", "GetWriterStats"]
    assert [p.name for p in tmp_path.joinpath("run").iterdir()] == ["sim.status.json"]  # no temp file left
    text = render({**status, "status_age_s": 0.2})
    assert "trading state   unknown" in text and "db writer       unknown" in text


def test_answers_from_every_peer_are_shown(tmp_path):
    panic = Peer({GetTradingState: TradingStateChanged(state=TradingState.REDUCING, previous=TradingState.ACTIVE,
                                                       reason="stale")})
    stats = WriterStats(pending_bars=3, mailbox=1, last_flush_at="2026-01-01T00:00:00+00:00", last_flush_bars=12,
                        failing_since=None, last_error=None)
    writer = Peer({GetWriterStats: stats})
    pub = StatusPublisher(tmp_path, "sim", state_store=lambda: None, panic=lambda: panic, db_writer=lambda: writer)
    status = pub.collect()
    assert status["trading_state"] == "REDUCING" and status["db_writer"]["pending_bars"] == 3
    assert status["ready"] is None and status["positions"] is None  # no StateStore: unknown, not "none"


def test_no_node_running_is_one_clear_sentence(tmp_path):
    with pytest.raises(StatusUnavailable, match="No node is running for venue sim"):
        read_live_status(tmp_path, "sim")


def test_a_file_left_by_a_dead_node_is_not_shown(tmp_path):
    pub = StatusPublisher(tmp_path, "sim", state_store=lambda: None, panic=lambda: None, db_writer=lambda: None)
    with NodePresence(tmp_path, "sim"):
        pub.publish()
        assert read_live_status(tmp_path, "sim")["pid"] == os.getpid()
    assert status_path(tmp_path, "sim").exists()  # the "dead" node left it behind
    with pytest.raises(StatusUnavailable, match="No node is running"):
        read_live_status(tmp_path, "sim")


def test_an_old_file_of_a_running_node_is_flagged(tmp_path):
    pub = StatusPublisher(tmp_path, "sim", state_store=lambda: None, panic=lambda: None, db_writer=lambda: None)
    with NodePresence(tmp_path, "sim"):
        pub.publish()
        status = read_live_status(tmp_path, "sim", now=time.time() + 30)
    assert status["status_age_s"] > 29 and "WARNING: the status is" in render(status)


def test_a_history_file_that_breaks_while_running_shows_in_status(tmp_path):
    """Issue 12: a store failing at run time is visible to the operator, not only a log line."""
    stats = WriterStats(pending_bars=40, mailbox=0, last_flush_at="2026-01-01T00:00:00+00:00", last_flush_bars=12,
                        failing_since="2026-01-01T00:00:05+00:00", last_error="IOException: Could not read from file")
    pub = StatusPublisher(tmp_path, "sim", state_store=lambda: None, panic=lambda: None,
                          db_writer=lambda: Peer({GetWriterStats: stats}))
    status = pub.collect()
    text = render({**status, "status_age_s": 0.1})
    assert "queue 40 bars" in text
    assert "FAILING since 2026-01-01T00:00:05+00:00: IOException: Could not read from file" in text
