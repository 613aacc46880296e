"""Pin the way infra.bybit.clients points unmodified pybit at another host.

pybit fixes its URLs at construction; the overrides rely on two internals
(HTTP builds f"{self.endpoint}{path}" per call; WebSocket connects and
reconnects through `_connect(url)`). If a pybit upgrade changes either, these
tests fail instead of the node silently talking to the real exchange.
"""

from __future__ import annotations

import inspect

import pytest
from pybit.unified_trading import HTTP, WebSocket

from infra.bybit.clients import RoutedWebSocket, make_http, make_public_ws
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


def test_pybit_internals_the_overrides_rely_on():
    assert list(inspect.signature(WebSocket._connect).parameters) == ["self", "url"]
    assert "endpoint" not in inspect.signature(HTTP).parameters  # still set after construction
    assert RoutedWebSocket._connect is not WebSocket._connect


def test_http_requests_reach_the_simulator(sim, sim_http):
    assert sim_http.endpoint == sim.urls.rest
    sim.clock.advance(1.5)
    answer = sim_http.get_server_time()
    # Only the simulator knows the manual clock's time.
    assert answer["time"] == sim.clock.now_ms()
    assert answer["result"]["timeNano"] == str(sim.clock.now_ms() * 1_000_000)


def test_private_http_is_signed_for_the_simulator(sim_http):
    info = sim_http.get_api_key_information()
    assert info["retCode"] == 0
    assert info["result"]["apiKey"] == "sim-test-key"


def test_public_websocket_connects_to_the_simulator(sim, open_ws):
    pub = open_ws("public")
    assert pub.ws.endpoint == sim.urls.ws_public
    assert sim.call(lambda ex: len(ex.connections(("public",)))) == 1
    pub.subscribe("tickers.{symbol}", symbol="BTCUSDT")
    frame = pub.wait_for(lambda f: f["topic"] == "tickers.BTCUSDT")
    assert frame["data"]["symbol"] == "BTCUSDT"


def test_private_websocket_authenticates_at_the_simulator(sim, open_ws):
    prv = open_ws("private")
    assert prv.ws.endpoint == sim.urls.ws_private
    prv.subscribe("wallet")
    # Auth happened at the simulator: it marked the connection authenticated.
    wait_until(lambda: sim.call(lambda ex: [c.authed for c in ex.connections(("private",))]) == [True])


def test_reconnect_goes_back_to_the_simulator(sim, open_ws):
    pub = open_ws("public")
    pub.subscribe("kline.{interval}.{symbol}", symbol="BTCUSDT", interval="1")
    pub.wait_for(lambda f: f["topic"] == "kline.1.BTCUSDT")
    before = len(pub.snapshot())
    assert sim.faults.drop_sockets("public") == 1
    # pybit reconnects (to the simulator, not to Bybit) and re-subscribes.
    pub.wait_for(lambda f: f["topic"] == "kline.1.BTCUSDT", after=before, timeout=10)
    assert pub.ws.endpoint == sim.urls.ws_public


def test_make_public_ws_without_override_would_target_bybit():
    """The template pybit would use: proves the override is what changes the host."""
    import pybit.unified_trading as ut

    assert "bybit.com" in ut.PUBLIC_WSS.format(SUBDOMAIN="stream", DOMAIN="bybit", CHANNEL_TYPE="linear")
    assert make_public_ws.__module__ == "infra.bybit.clients"
    assert make_http.__module__ == "infra.bybit.clients"
