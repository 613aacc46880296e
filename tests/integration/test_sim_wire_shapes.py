"""The simulator's payloads carry every field of Bybit's documented examples, with the same JSON types."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from tests.conftest import SAMPLES

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


# Objects keyed by data (coin -> fee), not by field name.
DYNAMIC_KEYS = {"cumFeeDetail"}


def same_shape(doc: Any, ours: Any, where: str = "") -> list[str]:
    """Problems where `ours` lacks a documented key or uses another JSON type for it."""
    problems = []
    if where.rsplit(".", 1)[-1] in DYNAMIC_KEYS:
        return [] if isinstance(ours, dict) else [f"{where}: expected an object"]
    if isinstance(doc, dict):
        if not isinstance(ours, dict):
            return [f"{where}: expected an object"]
        for key, value in doc.items():
            if key not in ours:
                problems.append(f"{where}.{key}: missing")
            else:
                problems += same_shape(value, ours[key], f"{where}.{key}")
    elif isinstance(doc, list):
        if not isinstance(ours, list):
            return [f"{where}: expected a list"]
        if doc and ours:
            problems += same_shape(doc[0], ours[0], f"{where}[0]")
    elif doc is not None and type(doc) is not type(ours) and not (isinstance(doc, (int, float)) and isinstance(ours, (int, float)) and not isinstance(ours, bool)):
        problems.append(f"{where}: {type(doc).__name__} in the docs, {type(ours).__name__} here")
    return problems


@pytest.fixture
def traded(sim, sim_http, open_ws):
    """An account with a closed trade, an open position with TP/SL, a resting order and a funding payment."""
    prv = open_ws("private", raw=True)
    for topic in ("order", "execution", "position", "wallet"):
        prv.subscribe(topic)
    prv.wait_count(lambda f: f.get("op") == "subscribe", 4)
    px = Decimal(sim_http.get_tickers(category="linear", symbol="ETHUSDT")["result"]["list"][0]["lastPrice"])
    sim_http.place_order(category="linear", symbol="ETHUSDT", side="Buy", orderType="Market", qty="0.10")
    sim_http.place_order(category="linear", symbol="ETHUSDT", side="Sell", orderType="Market", qty="0.10",
                         reduceOnly=True)
    # The clock then runs to the next funding, up to eight hours on: the stops and the resting order
    # sit far enough away that the price walk cannot reach them, whatever the time of day.
    cent = Decimal("0.01")
    sim_http.place_order(category="linear", symbol="ETHUSDT", side="Buy", orderType="Market", qty="0.10",
                         takeProfit=str((px * Decimal("1.3")).quantize(cent)),
                         stopLoss=str((px * Decimal("0.7")).quantize(cent)))
    sim_http.place_order(category="linear", symbol="ETHUSDT", side="Buy", orderType="Limit", qty="0.10",
                         price=str((px * Decimal("0.92")).quantize(cent)), orderLinkId="rest-1")
    ticker = sim_http.get_tickers(category="linear", symbol="ETHUSDT")["result"]["list"][0]
    sim.clock.advance_to(int(ticker["nextFundingTime"]))
    prv.wait_for(lambda f: f.get("topic") == "execution" and f["data"][0]["execType"] == "Funding")
    return prv


REST_CASES = [
    ("3.1-get-v5-market-time-1.json", "get_server_time", {}),
    ("3.2-get-v5-market-kline-1.json", "get_kline", {"category": "linear", "symbol": "ETHUSDT", "interval": "60", "limit": 3}),
    ("3.3-get-v5-market-tickers-1.json", "get_tickers", {"category": "linear", "symbol": "ETHUSDT"}),
    ("3.4-get-v5-market-instruments-info-1.json", "get_instruments_info", {"category": "linear", "symbol": "ETHUSDT"}),
    ("3.8-get-v5-order-realtime-1.json", "get_open_orders", {"category": "linear", "symbol": "ETHUSDT"}),
    ("3.9-get-v5-position-list-1.json", "get_positions", {"category": "linear", "symbol": "ETHUSDT"}),
    ("3.13-get-v5-account-wallet-balance-1.json", "get_wallet_balance", {"accountType": "UNIFIED"}),
    ("3.15-get-v5-execution-list-1.json", "get_executions", {"category": "linear", "symbol": "ETHUSDT"}),
    ("3.16-get-v5-position-closed-pnl-1.json", "get_closed_pnl", {"category": "linear", "symbol": "ETHUSDT"}),
]


@pytest.mark.parametrize("name,method,kwargs", REST_CASES, ids=[c[0].split("-1.json")[0] for c in REST_CASES])
def test_rest_answers_match_the_documented_shape(traded, sim_http, name, method, kwargs):
    ours = getattr(sim_http, method)(**kwargs)
    doc = sample(name)
    assert ours["result"].get("list", True), "nothing to compare"
    assert same_shape(doc, ours) == []


def test_order_answers_match_the_documented_shape(sim, sim_http):
    px = Decimal(sim_http.get_tickers(category="linear", symbol="ETHUSDT")["result"]["list"][0]["lastPrice"])
    created = sim_http.place_order(category="linear", symbol="ETHUSDT", side="Buy", orderType="Limit", qty="0.10",
                                   price=str(px - 20))
    assert same_shape(sample("3.5-post-v5-order-create-1.json"), created) == []
    cancelled = sim_http.cancel_order(category="linear", symbol="ETHUSDT", orderId=created["result"]["orderId"])
    assert same_shape(sample("3.6-post-v5-order-cancel-1.json"), cancelled) == []
    sim_http.place_order(category="linear", symbol="ETHUSDT", side="Buy", orderType="Limit", qty="0.10",
                         price=str(px - 20))
    everything = sim_http.cancel_all_orders(category="linear", symbol="ETHUSDT")
    assert same_shape(sample("3.7-post-v5-order-cancel-all-1.json"), everything) == []
    sim_http.place_order(category="linear", symbol="ETHUSDT", side="Buy", orderType="Market", qty="0.10")
    stop = sim_http.set_trading_stop(category="linear", symbol="ETHUSDT", tpslMode="Full", positionIdx=0,
                                     stopLoss=str(px - 100))
    assert same_shape(sample("3.10-post-v5-position-trading-stop-1.json"), stop) == []
    assert same_shape(sample("3.14-post-v5-order-disconnected-cancel-all-dcp-1.json"),
                      sim_http.set_dcp(product="DERIVATIVES", timeWindow=10)) == []


@pytest.mark.parametrize("name,topic", [
    ("4.10-private-position-2.json", "position"),
    ("4.11-private-order-2.json", "order"),
    ("4.12-private-execution-2.json", "execution"),
    ("4.13-private-wallet-2.json", "wallet"),
])
def test_private_pushes_match_the_documented_shape(traded, name, topic):
    frame = traded.wait_for(lambda f: f.get("topic") == topic)
    doc = sample(name)
    assert same_shape(doc, frame) == []


def test_public_pushes_match_the_documented_shape(sim, open_ws):
    pub = open_ws("public", raw=True)
    pub.subscribe("tickers.{symbol}", symbol="ETHUSDT")
    pub.subscribe("kline.{interval}.{symbol}", symbol="ETHUSDT", interval="5")
    ticker = pub.wait_for(lambda f: f.get("topic") == "tickers.ETHUSDT")
    kline = pub.wait_for(lambda f: f.get("topic") == "kline.5.ETHUSDT")
    assert same_shape(sample("4.7-tickers-symbol-linear-1.json"), ticker) == []
    assert same_shape(sample("4.6-kline-interval-symbol-1.json"), kline) == []
    ack = pub.wait_for(lambda f: f.get("op") == "subscribe")
    assert same_shape(sample("4.4-subscribe-unsubscribe-3.json"), ack) == [] or same_shape(
        sample("4.4-subscribe-unsubscribe-4.json"), ack) == []
