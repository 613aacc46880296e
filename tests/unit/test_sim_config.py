"""The simulator binds loopback only and builds itself from the node config."""

from __future__ import annotations

from decimal import Decimal

import pytest

from infra.config import load_config
from infra.sim import ManualClock, Simulator


def test_refuses_non_loopback_hosts():
    for host in ("0.0.0.0", "192.168.1.10", "::"):
        with pytest.raises(ValueError):
            Simulator(host=host)


@pytest.mark.timeout(20)
def test_from_config_listens_on_loopback_only(write_config):
    app = load_config(write_config(
        "symbols:\n  SOLUSDT:\n    intervals: ['1']\nsim:\n  seed: 3\n  dcp_available: false\n"
        "  starting_balance_usdt: 500\n"
    ))
    sim = Simulator.from_config(app.node, clock=ManualClock(start_ms=1_767_225_600_000))
    assert sim.symbols == ["SOLUSDT"]
    urls = sim.start()
    try:
        host, _port = sim._server.sockets[0].getsockname()[:2]
        assert host == "127.0.0.1" and len(sim._server.sockets) == 1
        assert urls.rest.startswith("http://127.0.0.1:")
        assert sim.call(lambda ex: (ex.seed, ex.account.dcp_available, ex.account.balance)) == (3, False, Decimal(500))
    finally:
        sim.stop()
    sim.stop()  # idempotent
