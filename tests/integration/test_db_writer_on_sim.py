"""The node on the simulator: closed bars from the public WebSocket end up in the history file."""

from __future__ import annotations

import pytest

from actors.base import Directory, Role
from actors.supervisor import Supervisor
from actors.tree import default_children
from infra.config import load_config
from infra.store import HistoryStore
from messages.control import Ping
from messages.market import BarSource
from messages.queries import GetSnapshot
from tests.helpers import wait_until
from tests.integration.conftest import SIM_KEY, SIM_SECRET

pytestmark = pytest.mark.timeout(60)


def test_closed_bars_are_written_and_drained_at_stop(sim, write_config):
    # A long interval: nothing is flushed by time, so what is stored was drained at stop.
    app = load_config(write_config(
        "symbols:\n  BTCUSDT:\n    intervals: ['1']\n"
        "db_writer:\n  flush_max_bars: 100000\n  flush_interval_ms: 600000\n"
        f"sim:\n  api_key: {SIM_KEY}\n  api_secret: {SIM_SECRET}\n"
    ))
    directory = Directory()
    supervisor = Supervisor.start(app, directory, default_children(), urls=sim.urls)
    supervisor.ask(Ping(), timeout=30)
    state = directory.get(Role.STATE_STORE)
    wait_until(lambda: state.ask(GetSnapshot(), timeout=5).tickers.get("BTCUSDT"), timeout=10, what="ticker")
    sim.clock.advance(10 * 60)
    bars = wait_until(lambda: (b := state.ask(GetSnapshot(), timeout=5).bars.get(("BTCUSDT", "1"), ()))
                      and len(b) >= 10 and b, timeout=10, what="ten closed bars")
    store = HistoryStore.for_node(app.node)
    assert not store.exists()  # nothing flushed yet
    supervisor.stop(block=True, timeout=20)
    with store.session() as s:
        stored = s.bars("BTCUSDT", "1")
    assert [b.open_time for b in stored] == [b.open_time for b in bars]
    assert stored == list(bars) and all(b.source is BarSource.WS for b in stored)
