"""Same seed + same script + manual clock = the same REST answers and the same pushes."""

from __future__ import annotations

from decimal import Decimal

import pytest

from infra.bybit.clients import make_http
from infra.sim import ManualClock

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

START = 1_767_225_600_000 + 7 * 3_600_000 + 59 * 60_000  # 07:59 UTC: a funding settles during the script


def run_scenario(sim_factory, open_ws, sim_creds, seed: int) -> tuple[list, list, list]:
    sim = sim_factory(seed=seed, clock=ManualClock(start_ms=START))
    http = make_http(sim.urls, sim_creds)
    pub = open_ws("public", raw=True, target=sim)
    prv = open_ws("private", raw=True, target=sim)
    pub.subscribe("tickers.{symbol}", symbol="BTCUSDT")
    pub.subscribe("kline.{interval}.{symbol}", symbol="BTCUSDT", interval="1")
    for topic in ("order", "execution", "position", "wallet"):
        prv.subscribe(topic)
    pub.wait_count(lambda f: f.get("op") == "subscribe", 2)
    prv.wait_count(lambda f: f.get("op") == "subscribe", 4)
    answers = []

    def rest(fn, **kw):
        answers.append(fn(**kw))
        return answers[-1]

    px = Decimal(rest(http.get_tickers, category="linear", symbol="BTCUSDT")["result"]["list"][0]["lastPrice"])
    rest(http.get_kline, category="linear", symbol="BTCUSDT", interval="5", limit=50)
    rest(http.place_order, category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.010",
         orderLinkId="det-1", stopLoss=str(px - 300), takeProfit=str(px + 300))
    rest(http.place_order, category="linear", symbol="BTCUSDT", side="Sell", orderType="Limit", qty="0.005",
         price=str(px + 150), orderLinkId="det-2", reduceOnly=True)
    sim.clock.advance(90)
    sim.set_price("BTCUSDT", px + 200)
    sim.clock.advance(45)
    sim.set_price("BTCUSDT", px - 400)
    sim.clock.advance(61)
    for fn, kw in (
        (http.get_positions, {"category": "linear", "symbol": "BTCUSDT"}),
        (http.get_open_orders, {"category": "linear", "symbol": "BTCUSDT", "openOnly": 1}),
        (http.get_executions, {"category": "linear", "symbol": "BTCUSDT"}),
        (http.get_closed_pnl, {"category": "linear", "symbol": "BTCUSDT"}),
        (http.get_wallet_balance, {"accountType": "UNIFIED"}),
        (http.get_kline, {"category": "linear", "symbol": "BTCUSDT", "interval": "1", "limit": 5}),
    ):
        rest(fn, **kw)
    end = sim.clock.now_ms()
    pub.wait_for(lambda f: f.get("topic") == "kline.1.BTCUSDT" and f["ts"] == end)
    prv.wait_for(lambda f: f.get("topic") == "wallet" and f["creationTime"] == START + 135_000)
    return answers, _client_ids_removed(pub.snapshot()), _client_ids_removed(prv.snapshot())


def _client_ids_removed(frames: list[dict]) -> list[dict]:
    """pybit picks subscription req_ids with uuid4; the simulator only echoes them."""
    return [{**f, "req_id": "<client>"} if "req_id" in f else f for f in frames]


def test_two_runs_are_identical(sim_factory, open_ws, sim_creds):
    first = run_scenario(sim_factory, open_ws, sim_creds, seed=11)
    second = run_scenario(sim_factory, open_ws, sim_creds, seed=11)
    answers, public, private = first
    # The script did what it says: fills, a stop-out, a funding settlement.
    executions = answers[-4]["result"]["list"]
    assert {e["execType"] for e in executions} == {"Trade", "Funding"}
    assert any(f.get("topic") == "kline.1.BTCUSDT" and f["data"][0]["confirm"] for f in public)
    assert first[0] == second[0]
    assert first[1] == second[1] and len(public) > 5
    assert first[2] == second[2] and len(private) > 10
    other = run_scenario(sim_factory, open_ws, sim_creds, seed=12)
    assert other[0] != first[0]
