"""`python main.py signal` / `panic` as an operator runs them: real processes, an external simulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal

import pytest

from infra.bybit import OrderRequest, OrderType, new_order_link_id
from infra.presence import NodePresence
from messages.trading import ExecutionOutcome
from messages.types import Side
from tests.conftest import REPO
from tests.helpers import read_events, wait_until
from tests.integration.conftest import SIM_KEY, SIM_SECRET
from tests.integration.test_gateway_orders import make_gateway

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PRICES = {"BTCUSDT": Decimal("60000"), "ETHUSDT": Decimal("3000")}


@pytest.fixture
def venue(sim, sim_creds, tmp_path):
    for symbol, price in PRICES.items():
        sim.set_price(symbol, price)
    gateway = make_gateway(sim, sim_creds)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        "symbols:\n  BTCUSDT:\n    intervals: ['1']\n  ETHUSDT:\n    intervals: ['1']\n"
        f"exchange:\n  rest_url: {sim.urls.rest}\n"
        f"sim:\n  api_key: {SIM_KEY}\n  api_secret: {SIM_SECRET}\n"
        "log:\n  console: plain\n"
        "panic:\n  reconcile_interval_s: 0\n"
        "db_writer:\n  catch_up_days: 0\n"
    )
    yield sim, gateway, config, tmp_path / "data" / "logs" / "node.jsonl"
    gateway.close()


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("BYBIT_")}
    out["NO_PROXY"] = "127.0.0.1,localhost"
    return out


def main_py(config, *args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "main.py"), "--config", str(config), *args], cwd=REPO,
                          env=env(), capture_output=True, text=True, timeout=timeout)


def open_position(gateway, symbol: str, side: Side, qty: str) -> None:
    price = PRICES[symbol]
    up, down = price * Decimal("1.05"), price * Decimal("0.95")
    gateway.create_order(OrderRequest(
        symbol=symbol, side=side, order_type=OrderType.MARKET, qty=Decimal(qty), reference_price=price,
        order_link_id=new_order_link_id("t"),
        take_profit=up if side is Side.BUY else down, stop_loss=down if side is Side.BUY else up,
    ))


def test_panic_with_no_node_running_flattens_through_the_gateway(venue):
    sim, gateway, config, _ = venue
    open_position(gateway, "BTCUSDT", Side.BUY, "0.01")
    open_position(gateway, "ETHUSDT", Side.SELL, "0.1")
    done = main_py(config, "panic")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["flat"] is True and sorted(c["symbol"] for c in report["closed"]) == ["BTCUSDT", "ETHUSDT"]
    assert all(gateway.get_position(s).size == 0 for s in PRICES) and gateway.get_open_orders() == []


def test_signal_with_no_node_running_says_so_and_exits_1(venue):
    _, _, config, _ = venue
    done = main_py(config, "signal", "BTCUSDT", "long", "--usd", "100")
    assert done.returncode == 1 and "no node is running" in done.stderr and "Traceback" not in done.stderr


def test_signal_and_panic_reach_the_actors_of_a_running_node(venue):
    sim, gateway, config, log_path = venue
    node = subprocess.Popen([sys.executable, str(REPO / "main.py"), "--config", str(config), "run", "--duration", "90"],
                            cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: any(e["event"] == "control.watching" for e in read_events(log_path)), timeout=40,
                   what="the node watching its control directory")
        signal = main_py(config, "signal", "ETHUSDT", "short", "--usd", "120")
        answer = json.loads(signal.stdout)
        signal_id = answer["signal_id"]
        told = [e for e in read_events(log_path) if e["event"] == "control.signal"]
        assert [(e["signal_id"], e["delivered"]) for e in told] == [(signal_id, True)]
        # It waited for what the signal became and printed it; the exit code says whether that is done.
        assert answer["outcome"] in {o.value for o in ExecutionOutcome} - {"pending"}, answer
        assert answer["ok"] is (answer["outcome"] in ("filled", "closed", "already_flat"))
        assert signal.returncode == (0 if answer["ok"] else 1), signal.stderr
        # An absurd size never reaches the venue, whatever the trading state: blocked, with the reason, exit 1.
        absurd = main_py(config, "signal", "BTCUSDT", "long", "--usd", "1000000")
        refused = json.loads(absurd.stdout)
        assert absurd.returncode == 1 and refused["ok"] is False and refused["outcome"] == "blocked", refused
        assert refused["reason"] and refused["check"] and "order_id" not in refused
        assert all(o.link_id != refused.get("order_link_id") for o in sim.call(lambda ex: list(ex.account.orders.values())))

        open_position(gateway, "BTCUSDT", Side.BUY, "0.01")
        panic = main_py(config, "panic", timeout=90)
        assert panic.returncode == 0, panic.stderr
        report = json.loads(panic.stdout)
        assert report["flat"] is True and "BTCUSDT" in [c["symbol"] for c in report["closed"]]
        assert gateway.get_position("BTCUSDT").size == 0 and gateway.get_open_orders() == []
        events = read_events(log_path)
        # The node's own log: its watcher took the command and its Panic actor ran the procedure.
        assert [e["command"] for e in events if e["event"] == "control.command"] == ["signal", "signal", "panic"]
        assert len([e for e in events if e["event"] == "panic.started"]) == 1
        assert [e["flat"] for e in events if e["event"] == "panic.report"] == [True]
    finally:
        node.terminate()
        node.communicate(timeout=30)
    assert node.returncode == 0


def test_panic_with_a_node_that_does_not_answer_falls_back_to_flattening_through_the_gateway(venue):
    """A node that holds its lock but whose control channel is dead (hung, wedged) made `panic` print
    an error and exit 1 with every position still open: the panic button failed exactly when the node
    was sick. It now panics straight through the gateway, as with no node running."""
    sim, gateway, config, _ = venue
    open_position(gateway, "BTCUSDT", Side.BUY, "0.01")
    with NodePresence(config.parent / "data", "sim"):  # "running": the lock is held, nothing reads commands
        done = main_py(config, "panic", timeout=90)
    assert done.returncode == 0, done.stderr
    # Given up once the command was not even picked up (a few polls), not after the panic's whole
    # timeout (panic.deadline_s + 15 s = 45 s by default).
    assert "did not pick up the panic command within 3.5 s" in done.stderr
    report = json.loads(done.stdout)
    assert report["flat"] is True and [c["symbol"] for c in report["closed"]] == ["BTCUSDT"]
    assert gateway.get_position("BTCUSDT").size == 0 and gateway.get_open_orders() == []
