"""Authentication as Bybit answers it, seen through pybit."""

from __future__ import annotations

import pybit._helpers
import pytest
from pybit.exceptions import InvalidRequestError

from infra.bybit.clients import make_http, make_private_ws
from tests.helpers import wait_until
from tests.integration.conftest import sim_credentials

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


def test_signed_requests_pass(sim_http):
    assert sim_http.get_api_key_information()["retCode"] == 0


def test_bad_signature_is_10004(sim):
    http = make_http(sim.urls, sim_credentials(secret="not-the-secret"))
    with pytest.raises(InvalidRequestError) as err:
        http.get_api_key_information()
    assert err.value.status_code == 10004
    assert err.value.message.startswith("error sign!")


def test_unknown_key_is_10003(sim):
    http = make_http(sim.urls, sim_credentials(key="who-is-this"))
    with pytest.raises(InvalidRequestError) as err:
        http.get_api_key_information()
    assert err.value.status_code == 10003


def test_stale_timestamp_is_10002(sim, monkeypatch):
    real = pybit._helpers.generate_timestamp
    monkeypatch.setattr(pybit._helpers, "generate_timestamp", lambda: real() - 30_000)
    # Without 10002 in retry_codes pybit surfaces the code instead of retrying it away
    # (an empty set would be replaced by pybit's defaults).
    http = make_http(sim.urls, sim_credentials(), retry_codes={99999})
    with pytest.raises(InvalidRequestError) as err:
        http.get_api_key_information()
    assert err.value.status_code == 10002
    assert "recv_window" in err.value.message


def test_timestamp_ahead_of_server_is_10002(sim, monkeypatch):
    real = pybit._helpers.generate_timestamp
    monkeypatch.setattr(pybit._helpers, "generate_timestamp", lambda: real() + 5_000)
    http = make_http(sim.urls, sim_credentials(), retry_codes={99999})
    with pytest.raises(InvalidRequestError) as err:
        http.get_api_key_information()
    assert err.value.status_code == 10002


def test_public_endpoints_need_no_keys(sim):
    http = make_http(sim.urls, None)
    assert http.get_server_time()["retCode"] == 0
    with pytest.raises(PermissionError):
        http.get_api_key_information()


def test_private_websocket_with_a_bad_signature_is_refused(sim):
    ws = make_private_ws(sim.urls, sim_credentials(secret="wrong"))
    try:
        # pybit raises on the failed auth answer inside its thread and tears the socket down.
        wait_until(lambda: not ws.is_connected(), timeout=5)
        wait_until(lambda: sim.call(lambda ex: ex.connections(("private",))) == [], timeout=5)
    finally:
        ws.exit()


def test_post_signature_covers_the_raw_body_bytes(sim, sim_http):
    """Equal JSON, different bytes: the simulator checks what was sent, not a re-serialisation."""
    import hashlib
    import hmac
    import time

    import requests

    signed = '{"category": "linear", "symbol": "BTCUSDT"}'
    sent = '{"category":"linear","symbol":"BTCUSDT"}'
    ts, key, recv = str(int(time.time() * 1000)), "sim-test-key", "5000"
    sign = hmac.new(b"sim-test-secret", (ts + key + recv + signed).encode(), hashlib.sha256).hexdigest()
    headers = {"X-BAPI-API-KEY": key, "X-BAPI-TIMESTAMP": ts, "X-BAPI-RECV-WINDOW": recv, "X-BAPI-SIGN": sign,
               "Content-Type": "application/json"}
    url = f"{sim.urls.rest}/v5/order/cancel-all"
    assert requests.post(url, data=sent, headers=headers, timeout=5).json()["retCode"] == 10004
    assert requests.post(url, data=signed, headers=headers, timeout=5).json()["retCode"] == 0
    # pybit's own POSTs pass.
    assert sim_http.cancel_all_orders(category="linear", symbol="BTCUSDT")["retCode"] == 0


def test_post_with_a_bad_signature_is_10004(sim):
    http = make_http(sim.urls, sim_credentials(secret="nope"))
    with pytest.raises(InvalidRequestError) as err:
        http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.001")
    assert err.value.status_code == 10004
