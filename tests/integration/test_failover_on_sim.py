"""Failover of the whole node: a stuck public socket is noticed by staleness and replaced.

The simulator's `silence_open_sockets` sticks the node's public socket (open,
PINGs answered, nothing sent) while new connections are served, which is
the case pybit never notices by itself (DATA-011). The Supervisor must see
the streams go stale, replace WsPublic, and the replacement must carry every
desired topic again.
"""

from __future__ import annotations

import pytest

from actors.base import Directory, Role
from actors.supervisor import Supervisor
from actors.tree import default_children
from infra.bybit.gateway import Gateway
from infra.config import load_config
from infra.sim import WallClock
from messages.control import Ping
from messages.queries import GetHealth
from tests.helpers import wait_until
from tests.integration.conftest import SIM_KEY, SIM_SECRET

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

WINDOW_S = 2.0
DESIRED = {"tickers.BTCUSDT", "kline.1.BTCUSDT", "tickers.ETHUSDT", "kline.1.ETHUSDT"}


def _public_conns(sim) -> list[tuple[str, bool, frozenset[str]]]:
    return sim.call(lambda ex: [(c.conn_id, c.silenced, frozenset(c.topics)) for c in ex.connections(("public",))])


def test_a_stuck_public_socket_is_replaced_and_every_topic_flows_again(sim_factory, write_config, events):
    sim = sim_factory(clock=WallClock())
    app = load_config(write_config(
        "symbols:\n  BTCUSDT:\n    intervals: ['1']\n  ETHUSDT:\n    intervals: ['1']\n"
        f"sim:\n  api_key: {SIM_KEY}\n  api_secret: {SIM_SECRET}\n"
        f"supervisor:\n  check_interval_s: 0.1\n  public_stale_after_s: {WINDOW_S}\n  private_stale_after_s: 60\n"
    ))
    directory = Directory()
    gateway = Gateway.from_config(app, sim.urls)
    supervisor = Supervisor.start(app, directory, default_children(), urls=sim.urls, gateway=gateway)

    def health():
        return directory.get(Role.STATE_STORE).ask(GetHealth(), timeout=5)

    def delivered_since(frames: dict[str, int]) -> bool:
        h = health()
        return all(s in h.streams and not h.streams[s].stale and h.streams[s].frames > frames[s] for s in DESIRED)

    try:
        supervisor.ask(Ping(), timeout=30)
        wait_until(lambda: health().ready, timeout=20, what="node ready")
        [(old_id, _, old_topics)] = _public_conns(sim)
        assert old_topics == DESIRED

        assert sim.faults.silence_open_sockets("public") == 1

        stale = wait_until(lambda: [e for e in events() if e["event"] == "supervisor.stale"], timeout=10,
                           what="supervisor.stale")[0]
        assert stale["child"] == "ws_public" and stale["generation"] == 0 and set(stale["streams"]) <= DESIRED
        # Judged on the streams' own silence, never before the window.
        assert min(stale["ages_s"].values()) > WINDOW_S
        frames_when_stale = {s: health().streams[s].frames for s in DESIRED}
        restart = wait_until(lambda: [e for e in events() if e["event"] == "supervisor.restart"
                                      and e["child"] == "ws_public"], timeout=10, what="ws_public restarted")[0]
        assert restart["generation"] == 1 and restart["reason"] == "stale"

        # The stuck connection is closed (the retired generation's socket), and exactly one
        # new, unstuck connection carries the whole desired set.
        conns = wait_until(lambda: (c := _public_conns(sim)) and len(c) == 1 and c[0][0] != old_id and c,
                           timeout=10, what="the stuck connection closed, one new one open")
        [(_, stuck, topics)] = conns
        assert not stuck and topics == DESIRED

        # Every desired stream delivers again and is fresh: the frames counted after the old
        # socket was judged silent can only have come over the new one.
        wait_until(lambda: delivered_since(frames_when_stale), timeout=10, what="every desired stream delivering")
        wait_until(lambda: health().ready, timeout=10, what="ready again")
        subscribed = [e for e in events() if e["event"] == "ws.subscribed" and e.get("role") == "ws_public"]
        assert [e["generation"] for e in subscribed][-1] == 1 and set(subscribed[-1]["topics"]) == DESIRED
        # One replacement, no restart loop.
        assert [e["child"] for e in events() if e["event"] == "supervisor.restart"] == ["ws_public"]
        assert not [e for e in events() if e["event"] == "supervisor.escalated"]
    finally:
        supervisor.stop(block=True, timeout=15)
        gateway.close()
