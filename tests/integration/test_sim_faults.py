"""Every fault switch, and what an unmodified pybit client sees when it is on."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest
import requests
import websocket
from pybit.exceptions import FailedRequestError, InvalidRequestError

from infra.bybit.clients import make_http, make_public_ws
from messages.account import Order
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(40)]


def last_price(http) -> Decimal:
    return Decimal(http.get_tickers(category="linear", symbol="BTCUSDT")["result"]["list"][0]["lastPrice"])


# --- connections ------------------------------------------------------------------------------


def test_drop_sockets_pybit_reconnects_reauths_and_resubscribes(sim, open_ws):
    prv = open_ws("private", raw=True)
    prv.subscribe("order")
    prv.wait_for(lambda f: f.get("op") == "subscribe" and f["success"])
    before = sim.call(lambda ex: [c.conn_id for c in ex.connections(("private",))])
    count = len(prv.snapshot())
    assert sim.faults.drop_sockets("private") == 1
    # A fresh auth and the same subscription again, on a new connection.
    prv.wait_for(lambda f: f.get("op") == "auth" and f["success"], after=count, timeout=10)
    prv.wait_for(lambda f: f.get("op") == "subscribe" and f["success"], after=count, timeout=10)
    after = sim.call(lambda ex: [c.conn_id for c in ex.connections(("private",))])
    assert len(after) == 1 and after != before


def test_drop_sockets_with_a_close_frame_also_reconnects(sim, open_ws):
    pub = open_ws("public")
    pub.subscribe("tickers.{symbol}", symbol="BTCUSDT")
    pub.wait_for(lambda f: f["topic"] == "tickers.BTCUSDT")
    count = len(pub.snapshot())
    sim.faults.drop_sockets("public", close_frame=True)
    # websocket-client 1.9.2 reports a normal close as an error: pybit reconnects and gets a new snapshot.
    pub.wait_for(lambda f: f["topic"] == "tickers.BTCUSDT", after=count, timeout=10)


def test_go_silent_keeps_the_socket_open_and_pybit_never_notices(sim, open_ws):
    pub = open_ws("public", ping_interval=1, ping_timeout=0.5)
    pub.subscribe("kline.{interval}.{symbol}", symbol="BTCUSDT", interval="1")
    pub.wait_for(lambda f: f["topic"] == "kline.1.BTCUSDT")
    sim.faults.go_silent("public")
    count = len(pub.snapshot())
    sim.clock.advance(120)  # two bars close: nothing is sent
    deadline = time.monotonic() + 2.5  # more than two protocol ping rounds
    while time.monotonic() < deadline:
        assert pub.ws.is_connected()
        time.sleep(0.1)
    assert len(pub.snapshot()) == count
    sim.faults.end_silence("public")
    sim.clock.advance(60)
    pub.wait_for(lambda f: f["data"][0]["confirm"], after=count)


def test_refuse_connections_makes_pybit_give_up_reconnecting(sim, open_ws, sim_http):
    pub = open_ws("public")
    pub.subscribe("tickers.{symbol}", symbol="BTCUSDT")
    pub.wait_for(lambda f: f["topic"] == "tickers.BTCUSDT")
    sim.faults.refuse_connections(1.0)
    with pytest.raises(requests.exceptions.ConnectionError):
        sim_http.get_server_time()
    sim.faults.drop_sockets("public")
    # pybit's 10 reconnect attempts fail within milliseconds; it stops for good.
    wait_until(lambda: not pub.ws.is_connected(), timeout=5)
    time.sleep(1.2)  # the refusal window ends; pybit does not come back
    assert sim_http.get_server_time()["retCode"] == 0
    assert not pub.ws.is_connected()
    assert sim.call(lambda ex: ex.connections(("public",))) == []


def test_inject_frame_and_malformed_frames_kill_pybit_sockets(sim, open_ws):
    for kind in ("not_json", "delta_before_snapshot", "bad_pong"):
        pub = open_ws("public")
        pub.subscribe("tickers.{symbol}", symbol="BTCUSDT")
        pub.wait_for(lambda f: f["topic"] == "tickers.BTCUSDT")
        assert sim.faults.malformed_frames("public", kind=kind) >= 1
        # The callback path raises inside pybit's thread: the connection is torn down, not reconnected.
        wait_until(lambda: not pub.ws.is_connected(), timeout=5)
        pub.close()
    raw = websocket.create_connection(sim.urls.ws_public, timeout=5)
    wait_until(lambda: sim.call(lambda ex: len(ex.connections(("public",)))) == 1)
    sim.faults.inject_frame("public", '{"hello":1}')
    assert json.loads(raw.recv()) == {"hello": 1}
    raw.close()


# --- REST ---------------------------------------------------------------------------------------


def test_http_error_is_a_failed_request(sim, sim_http):
    sim.faults.http_error(503, count=1, path="/v5/market/kline")
    with pytest.raises(FailedRequestError) as err:
        sim_http.get_kline(category="linear", symbol="BTCUSDT", interval="1", limit=1)
    assert err.value.status_code == 503
    assert sim_http.get_server_time()["retCode"] == 0  # other paths unaffected
    assert sim_http.get_kline(category="linear", symbol="BTCUSDT", interval="1", limit=1)["retCode"] == 0


def test_delay_responses_times_out_a_client(sim, sim_creds):
    http = make_http(sim.urls, sim_creds, timeout=0.3)
    sim.faults.delay_responses(1.0, count=1)
    with pytest.raises(requests.exceptions.ReadTimeout):
        http.get_server_time()
    started = time.monotonic()
    assert http.get_server_time()["retCode"] == 0
    assert time.monotonic() - started < 0.3


def test_forced_rate_limit_is_10006_with_a_future_reset(sim, sim_creds):
    http = make_http(sim.urls, sim_creds, retry_codes={99999}, return_response_headers=True)
    sim.faults.rate_limit("/v5/account/fee-rate", seconds=2)
    with pytest.raises(InvalidRequestError) as err:
        http.get_fee_rates(category="linear")
    assert err.value.status_code == 10006 and err.value.message == "Too many visits!"
    headers = err.value.resp_headers
    assert headers["X-Bapi-Limit-Status"] == "0"
    assert int(headers["X-Bapi-Limit-Reset-Timestamp"]) > time.time() * 1000


def test_pybit_waits_out_a_10006_and_succeeds(sim, sim_creds):
    http = make_http(sim.urls, sim_creds, return_response_headers=True)
    sim.faults.rate_limit("/v5/account/fee-rate", seconds=0.5, count=1)
    started = time.monotonic()
    body, _, headers = http.get_fee_rates(category="linear")
    assert body["retCode"] == 0 and time.monotonic() - started >= 0.2
    assert int(headers["X-Bapi-Limit"]) == 10


def test_real_endpoint_bucket(sim, sim_creds):
    http = make_http(sim.urls, sim_creds, retry_codes={99999}, return_response_headers=True)
    statuses = []
    for _ in range(10):
        _, _, headers = http.get_fee_rates(category="linear")
        statuses.append(int(headers["X-Bapi-Limit-Status"]))
    assert statuses[:3] == [9, 8, 7]
    with pytest.raises(InvalidRequestError) as err:
        http.get_fee_rates(category="linear")
    assert err.value.status_code == 10006


def test_ip_ban_is_http_403_for_rest_and_handshakes(sim, sim_http):
    sim.faults.ip_ban(1.0)
    with pytest.raises(FailedRequestError) as err:
        sim_http.get_server_time()
    assert err.value.status_code == 403
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(sim.urls.ws_public, timeout=5)
    wait_until(lambda: not sim.faults.state.ip_ban.active(), timeout=3)
    assert sim_http.get_server_time()["retCode"] == 0


def test_ip_request_limit_bans(sim_factory, sim_creds):
    sim = sim_factory(ip_limit_per_5s=5, ip_ban_s=0.5)
    http = make_http(sim.urls, sim_creds)
    for _ in range(5):
        http.get_server_time()
    with pytest.raises(FailedRequestError) as err:
        http.get_server_time()
    assert err.value.status_code == 403
    time.sleep(0.6)  # the ban length itself is what is tested
    assert http.get_server_time()["retCode"] == 0


# --- trading --------------------------------------------------------------------------------------


def test_zero_avg_price_on_the_next_market_order(sim, sim_http):
    sim.faults.zero_avg_price_next_market_order(queries=1)
    oid = sim_http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market",
                               qty="0.001")["result"]["orderId"]
    first = sim_http.get_open_orders(category="linear", symbol="BTCUSDT", openOnly=1, orderId=oid)["result"]["list"][0]
    assert first["avgPrice"] == "0" and first["orderStatus"] == "Filled"
    assert Order.from_bybit(first).avg_price is None  # "0" means unknown, never a price
    second = sim_http.get_open_orders(category="linear", symbol="BTCUSDT", openOnly=1, orderId=oid)["result"]["list"][0]
    assert Decimal(second["avgPrice"]) > 0


def test_empty_position_list_while_positions_exist(sim, sim_http):
    sim_http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.001")
    sim.faults.empty_position_list(count=1)
    assert sim_http.get_positions(category="linear", settleCoin="USDT")["result"]["list"] == []
    assert sim_http.get_positions(category="linear", settleCoin="USDT")["result"]["list"][0]["size"] == "0.001"


def test_fail_next_order_creates(sim, sim_http):
    sim.faults.fail_next_order_creates(2)
    for _ in range(2):
        with pytest.raises(InvalidRequestError) as err:
            sim_http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.001")
        assert err.value.status_code == 10016
    assert sim_http.get_open_orders(category="linear", symbol="BTCUSDT", openOnly=1)["result"]["list"] == []
    assert sim_http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market",
                                qty="0.001")["retCode"] == 0


def test_timeout_after_accept_is_the_ambiguous_outcome(sim, sim_creds, sim_http):
    impatient = make_http(sim.urls, sim_creds, timeout=0.5)
    sim.faults.timeout_next_order_create(hold_s=2)
    with pytest.raises(requests.exceptions.ReadTimeout):
        impatient.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.001",
                              orderLinkId="maybe-1")
    # It was accepted: the lookup by orderLinkId finds it, and a retry is refused as a duplicate.
    (row,) = sim_http.get_open_orders(category="linear", symbol="BTCUSDT", openOnly=1,
                                      orderLinkId="maybe-1")["result"]["list"]
    assert row["orderStatus"] == "Filled"
    with pytest.raises(InvalidRequestError) as err:
        sim_http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.001",
                             orderLinkId="maybe-1")
    assert err.value.status_code == 110072


def test_delay_private_auth(sim, open_ws):
    sim.faults.delay_private_auth(0.6)
    started = time.monotonic()
    prv = open_ws("private", raw=True)
    prv.wait_for(lambda f: f.get("op") == "auth", timeout=5)
    assert time.monotonic() - started >= 0.5


def test_duplicate_next_execution(sim, sim_http, open_ws):
    prv = open_ws("private", raw=True)
    prv.subscribe("execution")
    prv.wait_for(lambda f: f.get("op") == "subscribe")
    sim.faults.duplicate_next_execution(1)
    sim_http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.001")
    frames = prv.wait_count(lambda f: f.get("topic") == "execution", 2)
    assert frames[0] == frames[1]
    sim_http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.001")
    frames = prv.wait_count(lambda f: f.get("topic") == "execution", 3)
    assert frames[2]["id"] != frames[0]["id"]


def test_admin_endpoint_switches_faults_out_of_process(sim, sim_http):
    base = sim.urls.rest
    ok = requests.post(f"{base}/sim/fault/http_error", json={"status": 502, "count": 1}, timeout=5)
    assert ok.status_code == 200 and ok.json()["ok"]
    with pytest.raises(FailedRequestError) as err:
        sim_http.get_server_time()
    assert err.value.status_code == 502
    missing = requests.post(f"{base}/sim/fault/no_such_switch", json={}, timeout=5)
    assert missing.status_code == 404 and "drop_sockets" in missing.json()["switches"]
    bad = requests.post(f"{base}/sim/fault/http_error", json={"status": 200}, timeout=5)
    assert bad.status_code == 400
    t0 = sim.clock.now_ms()
    assert requests.post(f"{base}/sim/advance", json={"seconds": 60}, timeout=5).json()["now_ms"] == t0 + 60_000
    assert requests.post(f"{base}/sim/price", json={"symbol": "BTCUSDT", "price": "50000"}, timeout=5).json()["ok"]
    assert last_price(sim_http) == Decimal("50000")
    requests.post(f"{base}/sim/fault/history_hole", json={"symbol": "BTCUSDT", "start_ms": 0, "end_ms": 1},
                  timeout=5).raise_for_status()


def test_ws_handshake_refused_by_ip_ban_exhausts_pybit(sim):
    sim.faults.ip_ban(5)
    with pytest.raises(websocket.WebSocketTimeoutException):
        make_public_ws(sim.urls)
