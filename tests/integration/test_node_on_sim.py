"""The node's actor tree against the simulator: public and private streams reach the StateStore."""

from __future__ import annotations

from decimal import Decimal

import pytest

from actors.base import Directory, Role
from actors.supervisor import Supervisor
from actors.tree import default_children
from infra.config import load_config
from messages.control import Ping
from messages.queries import GetSnapshot
from tests.helpers import wait_until
from tests.integration.conftest import SIM_KEY, SIM_SECRET

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def node(sim, write_config):
    app = load_config(write_config(
        f"symbols:\n  BTCUSDT:\n    intervals: ['1', '5']\n  ETHUSDT:\n    intervals: ['1']\n"
        f"sim:\n  api_key: {SIM_KEY}\n  api_secret: {SIM_SECRET}\n"
    ))
    directory = Directory()
    supervisor = Supervisor.start(app, directory, default_children(), urls=sim.urls)
    supervisor.ask(Ping(), timeout=30)
    yield directory
    supervisor.stop(block=True, timeout=15)


def snapshot(directory):
    return directory.get(Role.STATE_STORE).ask(GetSnapshot(), timeout=5)


def test_tickers_and_closing_bars_reach_the_state_store(sim, node):
    wait_until(lambda: set(snapshot(node).tickers) == {"BTCUSDT", "ETHUSDT"}, timeout=10, what="ticker snapshots")
    sim.clock.advance(5 * 60)
    snap = wait_until(
        lambda: (s := snapshot(node)).bars.get(("BTCUSDT", "5")) and len(s.bars.get(("BTCUSDT", "1"), ())) >= 5 and s,
        timeout=10,
        what="closed 1m and 5m bars",
    )
    one_minute = snap.bars[("BTCUSDT", "1")]
    assert all(b.source == "ws" for b in one_minute)
    assert [b.open_ms for b in one_minute] == sorted({b.open_ms for b in one_minute})
    assert snap.age_s("kline.1.ETHUSDT") is not None


def test_private_pushes_reach_the_state_store(sim, sim_http, node):
    wait_until(lambda: snapshot(node).tickers.get("BTCUSDT"), timeout=10, what="BTC ticker")
    sim_http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.01",
                         orderLinkId="node-sees-it")
    snap = wait_until(
        lambda: (s := snapshot(node)).positions.get(("BTCUSDT", 0)) and s.wallet and s.recent_executions and s,
        timeout=10,
        what="position, wallet and execution pushes",
    )
    position = snap.positions[("BTCUSDT", 0)]
    assert position.size == Decimal("0.01") and position.side == "Buy"
    assert any(e.order_link_id == "node-sees-it" for e in snap.recent_executions)
    assert snap.wallet.account_type == "UNIFIED"
