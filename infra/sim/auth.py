"""REST request authentication, checked the way Bybit checks it (REFERENCE.md 2.2).

The signature covers `timestamp + api_key + recv_window + payload`, where the
payload is the raw query string (GET) or the raw body bytes (POST) exactly as
received: re-serialising the JSON would hide a client that signs one thing
and sends another. Timestamps are checked against wall time, the client's
clock, even when the market runs on a manual clock.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Mapping

from infra.sim.clock import wall_ms
from infra.sim.wire import INVALID_KEY, SIGN_ERROR, TIMESTAMP_ERROR, SimError

DEFAULT_RECV_WINDOW = 5000


def check_rest_auth(headers: Mapping[str, str], payload: bytes, keys: Mapping[str, str]) -> str:
    """Return the API key of a correctly signed request; raise SimError with Bybit's code otherwise."""
    key = headers.get("X-BAPI-API-KEY", "")
    secret = keys.get(key)
    if not key or secret is None:
        raise SimError(INVALID_KEY, "API key is invalid.")
    ts_text = headers.get("X-BAPI-TIMESTAMP", "")
    recv_text = headers.get("X-BAPI-RECV-WINDOW", "")
    server = wall_ms()
    try:
        ts = int(ts_text)
        recv = int(recv_text) if recv_text else DEFAULT_RECV_WINDOW
    except ValueError:
        raise SimError(TIMESTAMP_ERROR, "invalid request, please check your timestamp or recv_window param") from None
    if not (server - recv <= ts < server + 1000):
        raise SimError(
            TIMESTAMP_ERROR,
            "invalid request, please check your server timestamp or recv_window param. "
            f"req_timestamp[{ts}],server_timestamp[{server}],recv_window[{recv}]",
        )
    origin = f"{ts_text}{key}{recv_text}".encode() + payload
    expected = hmac.new(secret.encode(), origin, hashlib.sha256).hexdigest()
    sign = headers.get("X-BAPI-SIGN", "")
    if not hmac.compare_digest(expected, sign.lower()):
        raise SimError(
            SIGN_ERROR,
            f"error sign! origin_string[{origin.decode('utf-8', 'replace')}]",
        )
    return key
