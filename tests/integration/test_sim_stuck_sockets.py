"""`silence_open_sockets`: the connections open now get stuck, connections opened afterwards work.

What a stuck venue socket looks like on the wire: it stays open, its WebSocket
PINGs are answered, but it sends nothing at all (no data, no ack); a new
connection to the same venue is served normally, so a client that notices
the silence can recover by opening another one.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(40)]

KLINE, TICKER = "kline.1.BTCUSDT", "tickers.BTCUSDT"


def _public(sim) -> list[tuple[str, bool, list[str]]]:
    return sim.call(lambda ex: [(c.conn_id, c.silenced, list(c.topics)) for c in ex.connections(("public",))])


def _confirmed(frame) -> bool:
    return frame["topic"] == KLINE and frame["data"][0]["confirm"]


def test_open_sockets_go_quiet_while_new_ones_are_served(sim, open_ws):
    old = open_ws("public", raw=True, ping_interval=1, ping_timeout=0.5)
    old.subscribe("kline.{interval}.{symbol}", symbol="BTCUSDT", interval="1")
    old.subscribe("tickers.{symbol}", symbol="BTCUSDT")
    old.wait_for(lambda f: f["topic"] == TICKER)
    old.wait_for(lambda f: f["topic"] == KLINE)
    [(old_id, _, _)] = _public(sim)

    silenced_at = time.time()
    assert sim.faults.silence_open_sockets() == 1
    heard = len(old.snapshot())

    new = open_ws("public", raw=True)
    new.subscribe("kline.{interval}.{symbol}", symbol="BTCUSDT", interval="1")
    new.subscribe("tickers.{symbol}", symbol="BTCUSDT")
    new.wait_for(lambda f: f.get("topic") == TICKER and f["type"] == "snapshot")
    new.wait_for(lambda f: f.get("topic") == KLINE)
    conns = dict((cid, silenced) for cid, silenced, _ in _public(sim))
    assert conns[old_id] is True and len(conns) == 2 and list(conns.values()).count(False) == 1

    # An op on the stuck socket is taken in (the venue sees it) but never answered.
    old.ws.ws.send(json.dumps({"op": "subscribe", "req_id": "on-stuck", "args": ["tickers.ETHUSDT"]}))
    wait_until(lambda: any(cid == old_id and "tickers.ETHUSDT" in topics for cid, _, topics in _public(sim)),
               what="the stuck socket's subscribe reached the venue")
    sim.clock.advance(60)  # a bar closes: the new socket hears it, the stuck one would have too
    new.wait_for(_confirmed)
    assert len(old.snapshot()) == heard

    # Still open for pybit: WebSocket PINGs are answered, a second round well after the switch.
    wait_until(lambda: old.ws.ws.last_pong_tm > silenced_at + 1.0, timeout=10, what="a PONG after the switch")
    assert old.ws.is_connected() and len(old.snapshot()) == heard

    # clear() lets a stuck connection speak again.
    sim.faults.clear()
    sim.clock.advance(60)
    old.wait_for(_confirmed, after=heard)


def test_switch_over_the_admin_endpoint_touches_only_the_channel_asked(sim, open_ws):
    pub = [open_ws("public", raw=True), open_ws("public", raw=True)]
    for ws in pub:
        ws.subscribe("tickers.{symbol}", symbol="BTCUSDT")
        ws.wait_for(lambda f: f.get("topic") == TICKER)
    prv = open_ws("private", raw=True)
    prv.subscribe("order")
    prv.wait_for(lambda f: f.get("op") == "subscribe" and f["success"])

    answer = requests.post(f"{sim.urls.rest}/sim/fault/silence_open_sockets", json={"channel": "public"}, timeout=5)
    assert answer.status_code == 200 and answer.json() == {"ok": True, "result": 2}
    assert [silenced for _, silenced, _ in _public(sim)] == [True, True]
    assert sim.call(lambda ex: [c.silenced for c in ex.connections(("private",))]) == [False]

    # The private socket still answers: a new subscription is acked.
    count = len(prv.snapshot())
    prv.subscribe("position")
    prv.wait_for(lambda f: f.get("op") == "subscribe" and f["success"], after=count)

    bad = requests.post(f"{sim.urls.rest}/sim/fault/silence_open_sockets", json={"channel": "spot"}, timeout=5)
    assert bad.status_code == 400
