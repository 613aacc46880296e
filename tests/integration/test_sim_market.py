"""Market REST and public WebSocket topics of the simulator, driven through pybit."""

from __future__ import annotations

from infra.sim.instruments import LISTED

import json
from decimal import Decimal

import pytest
import websocket

from infra.bybit.clients import make_http
from infra.sim import ManualClock
from messages.market import ClosedBar, Kline, Ticker
from messages.types import INTERVALS, align_ms, interval_ms, next_open_ms

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

MIN = 60_000
START = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def kline(http, interval="1", **kw):
    answer = http.get_kline(category="linear", symbol="BTCUSDT", interval=interval, **kw)
    assert answer["retCode"] == 0
    return answer["result"]["list"]


def test_kline_rows_are_strings_newest_first_with_the_open_bar(sim, sim_http):
    sim.clock.advance(0)
    now = sim.clock.now_ms()
    rows = kline(sim_http, limit=5)
    assert len(rows) == 5
    assert all(isinstance(v, str) for row in rows for v in row) and all(len(r) == 7 for r in rows)
    opens = [int(r[0]) for r in rows]
    assert opens == sorted(opens, reverse=True)
    assert opens[0] == align_ms("1", now)  # still open
    assert [b - a for a, b in zip(opens[1:], opens)] == [MIN] * 4
    bars = [ClosedBar.from_rest_row("BTCUSDT", "1", r) for r in rows]
    assert all(b.low <= b.open <= b.high for b in bars)


def test_kline_default_limit_and_cap(sim, sim_http):
    assert len(kline(sim_http)) == 200
    assert len(kline(sim_http, limit=5000)) == 1000


def test_kline_start_end_inclusive_on_open_time(sim, sim_http):
    start = align_ms("60", sim.clock.now_ms()) - 10 * 3_600_000
    rows = kline(sim_http, interval="60", start=start, end=start + 2 * 3_600_000)
    assert [int(r[0]) for r in rows] == [start + 2 * 3_600_000, start + 3_600_000, start]


def test_repeated_fetches_and_same_seed_agree(sim, sim_factory, sim_creds, sim_http):
    end = sim.clock.now_ms() - 3_600_000
    first = kline(sim_http, end=end, limit=300)
    assert kline(sim_http, end=end, limit=300) == first
    twin = sim_factory(clock=ManualClock(start_ms=sim.clock.now_ms()))
    assert kline(make_http(twin.urls, sim_creds), end=end, limit=300) == first
    other = sim_factory(seed=8, clock=ManualClock(start_ms=sim.clock.now_ms()))
    assert kline(make_http(other.urls, sim_creds), end=end, limit=300) != first


@pytest.mark.parametrize("interval", INTERVALS)
def test_every_interval_over_rest_and_websocket(sim, sim_http, open_ws, interval):
    rows = kline(sim_http, interval=interval, limit=3)
    assert 1 <= len(rows) <= 3
    pub = open_ws("public")
    pub.subscribe("kline.{interval}.{symbol}", symbol="BTCUSDT", interval=interval)
    frame = pub.wait_for(lambda f: f["topic"] == f"kline.{interval}.BTCUSDT")
    (update,) = Kline.from_bybit(frame)
    assert not update.confirm
    assert str(int(update.start.timestamp() * 1000)) == rows[0][0]


def test_live_bars_continue_the_history(sim, sim_http, open_ws):
    pub = open_ws("public")
    for interval in ("1", "5"):
        pub.subscribe("kline.{interval}.{symbol}", symbol="BTCUSDT", interval=interval)
    pub.wait_count(lambda f: f["topic"].startswith("kline."), 2)
    now = sim.clock.now_ms()
    boundary = next_open_ms("5", align_ms("5", now))
    sim.clock.advance_to(boundary + 1_000)
    closes = pub.wait_count(lambda f: f["data"][0]["confirm"], count=1 + (boundary - align_ms("1", now)) // MIN)
    for frame in closes:
        (bar,) = Kline.from_bybit(frame)
        interval = frame["topic"].split(".")[1]
        start = int(bar.start.timestamp() * 1000)
        (row,) = kline(sim_http, interval=interval, start=start, end=start)
        assert bar.closed_bar().model_dump(exclude={"source"}) == ClosedBar.from_rest_row(
            "BTCUSDT", interval, row).model_dump(exclude={"source"})
    one_minute = [f for f in closes if f["topic"] == "kline.1.BTCUSDT"]
    assert [f["data"][0]["start"] for f in one_minute] == sorted({f["data"][0]["start"] for f in one_minute})


def test_kline_sync_across_a_configured_hole(sim, sim_http):
    end = align_ms("1", sim.clock.now_ms()) - MIN
    hole_start, hole_end = end - 1500 * MIN, end - 1200 * MIN
    sim.add_history_hole("BTCUSDT", hole_start, hole_end)
    # Page backwards like a history sync: end = oldest open - 1.
    seen: list[int] = []
    cursor = end
    while len(seen) < 2500:
        rows = kline(sim_http, end=cursor, limit=1000)
        if not rows:
            break
        seen.extend(int(r[0]) for r in rows)
        cursor = int(rows[-1][0]) - 1
    assert len(seen) == len(set(seen))
    expected = [t for t in range(end, end - 4000 * MIN, -MIN) if not hole_start <= t <= hole_end][:len(seen)]
    assert seen == expected
    assert not any(hole_start <= t <= hole_end for t in seen)
    # Bars on both sides are the same as without the hole.
    (before,) = kline(sim_http, start=hole_start - MIN, end=hole_start - MIN)
    assert int(before[0]) == hole_start - MIN


def test_ticker_snapshot_then_deltas_with_only_changed_fields(sim, sim_http, open_ws):
    raw = open_ws("public", raw=True)
    raw.subscribe("tickers.{symbol}", symbol="ETHUSDT")
    snap = raw.wait_for(lambda f: f.get("topic") == "tickers.ETHUSDT")
    assert snap["type"] == "snapshot"
    state = dict(snap["data"])
    assert all(isinstance(v, str) for v in state.values())
    for _ in range(3):
        count = len(raw.snapshot())
        sim.clock.advance(7)
        delta = raw.wait_for(lambda f: f.get("topic") == "tickers.ETHUSDT", after=count)
        assert delta["type"] == "delta" and delta["cs"] > snap["cs"]
        changed = {k: v for k, v in delta["data"].items() if k != "symbol"}
        assert changed and all(state[k] != v for k, v in changed.items())
        state.update(changed)
    rest = sim_http.get_tickers(category="linear", symbol="ETHUSDT")["result"]["list"][0]
    for field in ("lastPrice", "markPrice", "indexPrice", "bid1Price", "ask1Price", "fundingRate", "volume24h"):
        assert state[field] == rest[field], field
    merged = Ticker.from_bybit({**snap, "data": state})
    assert merged.last_price == Decimal(rest["lastPrice"])


def test_pybit_merges_ticker_deltas_into_the_snapshot(sim, sim_http, open_ws):
    pub = open_ws("public")
    pub.subscribe("tickers.{symbol}", symbol="BTCUSDT")
    pub.wait_for(lambda f: f["topic"] == "tickers.BTCUSDT")
    count = len(pub.snapshot())
    sim.set_price("BTCUSDT", Decimal("61234.5"))
    frame = pub.wait_for(lambda f: f["data"]["lastPrice"] == "61234.50", after=count)
    assert frame["data"]["markPrice"] == "61234.50" and frame["data"]["ask1Price"] == "61234.60"
    assert "fundingRate" in frame["data"]  # kept from the snapshot by pybit's merge
    rest = sim_http.get_tickers(category="linear", symbol="BTCUSDT")["result"]["list"][0]
    assert rest["lastPrice"] == "61234.50"


def test_instruments_info_and_all_tickers(sim, sim_http):
    info = sim_http.get_instruments_info(category="linear")["result"]
    # A fixed listing like the venue's, whatever the simulator was started for.
    assert [i["symbol"] for i in info["list"]] == list(LISTED)
    btc = info["list"][0]
    assert btc["priceFilter"]["tickSize"] == "0.10" and btc["lotSizeFilter"]["qtyStep"] == "0.001"
    assert btc["lotSizeFilter"]["minOrderQty"] == "0.001" and btc["contractType"] == "LinearPerpetual"
    tickers = sim_http.get_tickers(category="linear")["result"]["list"]
    assert {t["symbol"] for t in tickers} == set(LISTED)
    assert int(tickers[0]["nextFundingTime"]) % (8 * 3_600_000) == 0


def test_server_time_follows_the_manual_clock(sim, sim_http):
    t0 = sim.clock.now_ms()
    sim.clock.advance(3600)
    answer = sim_http.get_server_time()
    assert int(answer["result"]["timeSecond"]) == (t0 + 3_600_000) // 1000 and answer["time"] == t0 + 3_600_000


# --- wire details pybit depends on (a raw client, to see what pybit swallows) -----------


def raw_client(url):
    return websocket.create_connection(url, timeout=5)


def test_pong_shapes_per_channel(sim, sim_creds):
    pub = raw_client(sim.urls.ws_public)
    pub.send(json.dumps({"op": "ping"}))
    pong = json.loads(pub.recv())
    assert pong == {"success": True, "ret_msg": "pong", "conn_id": pong["conn_id"], "req_id": "", "op": "ping"}
    pub.close()
    prv = raw_client(sim.urls.ws_private)
    prv.send(json.dumps({"req_id": "test", "op": "ping"}))
    pong = json.loads(prv.recv())
    assert pong["op"] == "pong" and pong["req_id"] == "test" and "success" not in pong
    assert pong["args"] == [str(sim.clock.now_ms())]
    prv.close()


def test_subscribe_ack_echoes_req_id_after_a_delay(sim):
    import time

    pub = raw_client(sim.urls.ws_public)
    sent = time.monotonic()
    pub.send(json.dumps({"op": "subscribe", "req_id": "abc-1", "args": ["tickers.BTCUSDT"]}))
    ack = json.loads(pub.recv())
    waited = time.monotonic() - sent
    assert ack["op"] == "subscribe" and ack["success"] is True and ack["req_id"] == "abc-1"
    assert waited >= 0.02
    assert json.loads(pub.recv())["type"] == "snapshot"
    pub.send(json.dumps({"op": "subscribe", "req_id": "bad", "args": ["tickers.NOPEUSDT"]}))
    nack = json.loads(pub.recv())
    assert nack["success"] is False and nack["req_id"] == "bad"
    pub.close()


def test_interval_table_is_complete():
    assert [interval_ms(i) for i in INTERVALS if i != "M"][:3] == [MIN, 3 * MIN, 5 * MIN]


def test_wall_clock_mode_streams_by_itself(sim_factory, open_ws):
    from infra.sim import WallClock

    live = sim_factory(clock=WallClock())
    pub = open_ws("public", raw=True, target=live)
    pub.subscribe("tickers.{symbol}", symbol="BTCUSDT")
    pub.subscribe("kline.{interval}.{symbol}", symbol="BTCUSDT", interval="1")
    pub.wait_for(lambda f: f.get("type") == "delta", timeout=5)  # no test drives the clock
    updates = pub.wait_count(lambda f: f.get("topic") == "kline.1.BTCUSDT", 2, timeout=5)
    assert updates[-1]["ts"] > updates[0]["ts"]
