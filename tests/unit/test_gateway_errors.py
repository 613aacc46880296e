"""How every kind of venue failure reaches the caller: real pybit against a scripted loopback venue.

Each test counts the requests that arrived, so "pybit did not retry" and
"nothing was sent during the ban" are facts, not assumptions.
"""

from __future__ import annotations

import inspect
import re
import socket
import time
from decimal import Decimal

import pytest
from pybit import account, market, position, trade, user
from pybit.unified_trading import HTTP
from pydantic import SecretStr

from infra.bybit import Gateway, IpBanned, Lane, NoAnswer, RateLimited, Rejected, TransientError
from infra.bybit.clients import VenueUrls
from infra.bybit.errors import MalformedResponse
from infra.bybit.testing import Reply, ScriptedVenue, envelope, limit_headers, serve_instruments
from infra.bybit.transport import Endpoints
from infra.config import Credentials, ExchangeConfig, TradingMode, Venue

pytestmark = pytest.mark.timeout(30)

CREDS = Credentials(api_key=SecretStr("test-key"), api_secret=SecretStr("test-secret"), source="simulator")
KLINE_ROW = ["1670608800000", "17071", "17073", "17027", "17055.5", "268611", "15.74"]


def make_gateway(urls: VenueUrls, **exchange) -> Gateway:
    settings = {"rest_timeout_s": Decimal("0.5"), "retry_max_wait_s": Decimal("0.05"), "read_attempts": 3, **exchange}
    return Gateway.create(
        urls=urls,
        credentials=CREDS,
        venue=Venue.SIM,
        trading_mode=TradingMode.PAPER,
        live_confirmed=False,
        exchange=ExchangeConfig(**settings),
    )


@pytest.fixture
def venue():
    with ScriptedVenue() as v:
        serve_instruments(v)
        yield v


@pytest.fixture
def gateway(venue):
    gw = make_gateway(venue.urls)
    yield gw
    gw.close()


def kline_answer():
    return Reply(body=envelope({"symbol": "BTCUSDT", "category": "linear", "list": [KLINE_ROW]}))


def test_endpoint_table_matches_pybit():
    """A pybit upgrade that renames a method or moves a path fails here, not in production."""
    enums = {"Trade": trade.Trade, "Position": position.Position, "Account": account.Account, "Market": market.Market, "User": user.User}
    for name, ep in vars(Endpoints).items():
        if not name.isupper():
            continue
        src = inspect.getsource(getattr(HTTP, ep.pybit_call))
        group, member = re.search(r"\{self\.endpoint\}\{(\w+)\.(\w+)\}", src).groups()
        assert str(getattr(enums[group], member)) == ep.path, name
        assert f'method="{ep.method}"' in src, name
        assert ("auth=True" in src) == ep.private, name


def test_10006_is_one_request_and_pauses_only_that_endpoint(venue, gateway):
    venue.on("GET", "/v5/market/kline", Reply(body=envelope(ret_code=10006, ret_msg="Too many visits!"), headers=limit_headers(10, 0, 400)))
    venue.on("GET", "/v5/market/time", {"retCode": 0, "retMsg": "OK", "result": {"timeSecond": "1", "timeNano": str(time.time_ns())}})
    with pytest.raises(RateLimited) as info:
        gateway.fetch_klines("BTCUSDT", "60", 1670608800000, 1670608800000)
    assert 0.2 < info.value.retry_after_s <= 0.45
    assert len(venue.requests("/v5/market/kline")) == 1, "pybit retried on its own"
    # Another endpoint is not held back.
    gateway.server_time()
    # The same endpoint waits for the reset before the next request leaves.
    venue.on("GET", "/v5/market/kline", kline_answer())
    started = time.monotonic()
    gateway.fetch_klines("BTCUSDT", "60", 1670608800000, 1670608800000)
    second = venue.requests("/v5/market/kline")[1]
    assert second.at - started > 0.15


def test_403_pauses_every_lane_and_nothing_is_sent(venue):
    gateway = make_gateway(venue.urls, ip_ban_pause_s=Decimal("0.6"))
    try:
        venue.on("GET", "/v5/market/kline", Reply(status=403, body="access too frequent"))
        venue.on("GET", "/v5/position/list", Reply(body=envelope({"list": []})))
        with pytest.raises(IpBanned):
            gateway.fetch_klines("BTCUSDT", "60", 1670608800000, 1670608800000)
        before = len(venue.requests())
        with pytest.raises(IpBanned):
            gateway.on_lane(Lane.PANIC).get_position("BTCUSDT")
        with pytest.raises(IpBanned):
            gateway.cancel_order("BTCUSDT", order_id="x")
        assert len(venue.requests()) == before, "a request left during the ban"
        time.sleep(0.7)
        venue.on("GET", "/v5/market/kline", kline_answer())
        assert len(gateway.fetch_klines("BTCUSDT", "60", 1670608800000, 1670608800000)) == 1
    finally:
        gateway.close()


def test_403_ban_length_comes_from_retry_after(venue, gateway):
    venue.on("GET", "/v5/market/kline", Reply(status=403, body="banned", headers={"Retry-After": "42"}))
    with pytest.raises(IpBanned) as info:
        gateway.fetch_klines("BTCUSDT", "60", 1670608800000, 1670608800000)
    assert 41 < info.value.until_monotonic - time.monotonic() <= 42


def test_5xx_is_no_answer_and_reads_retry_it(venue, gateway):
    calls = {"n": 0}

    def flaky(_req):
        calls["n"] += 1
        if calls["n"] < 3:
            return Reply(status=502, body="bad gateway")
        return Reply(body=envelope({"list": [{"accountType": "UNIFIED", "totalEquity": "10", "totalWalletBalance": "10", "coin": []}]}))

    venue.on("GET", "/v5/account/wallet-balance", flaky)
    wallet = gateway.get_wallet()
    assert wallet.total_equity == Decimal("10")
    assert calls["n"] == 3
    venue.on("GET", "/v5/market/kline", Reply(status=503, body="down"))
    with pytest.raises(NoAnswer):
        gateway.fetch_klines("BTCUSDT", "60", 1670608800000, 1670608800000)
    assert len(venue.requests("/v5/market/kline")) == 1, "fetch_klines must not retry"


def test_reads_give_up_after_the_configured_attempts(venue, gateway):
    venue.on("GET", "/v5/account/wallet-balance", Reply(status=500, body="boom"))
    with pytest.raises(NoAnswer):
        gateway.get_wallet()
    assert len(venue.requests("/v5/account/wallet-balance")) == 3


def test_read_timeout_is_no_answer(venue, gateway):
    venue.on("GET", "/v5/market/kline", Reply(body=envelope({"list": []}), delay_s=2))
    started = time.monotonic()
    with pytest.raises(NoAnswer):
        gateway.fetch_klines("BTCUSDT", "60", 1670608800000, 1670608800000)
    assert time.monotonic() - started < 2  # gave up at its 0.5 s timeout, not after the 2 s answer


def test_refused_connection_is_transient_but_not_ambiguous():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on `port` now.
    gateway = make_gateway(VenueUrls(rest=f"http://127.0.0.1:{port}", ws_public="", ws_private=""), read_attempts=1)
    try:
        with pytest.raises(TransientError) as info:
            gateway.fetch_klines("BTCUSDT", "60", 1670608800000, 1670608800000)
        assert not isinstance(info.value, NoAnswer)
    finally:
        gateway.close()


def test_undecodable_body_is_no_answer(venue, gateway):
    venue.on("GET", "/v5/market/kline", Reply(body="<html>oops</html>"))
    with pytest.raises(NoAnswer):
        gateway.fetch_klines("BTCUSDT", "60", 1670608800000, 1670608800000)


def test_business_error_is_rejected_with_its_code(venue, gateway):
    venue.on("POST", "/v5/order/cancel", Reply(body=envelope(ret_code=110001, ret_msg="order not exists or too late to cancel")))
    with pytest.raises(Rejected) as info:
        gateway.cancel_order("BTCUSDT", order_link_id="abc")
    assert info.value.ret_code == 110001
    assert len(venue.requests("/v5/order/cancel")) == 1


def test_stale_timestamp_is_transient_not_rejected(venue, gateway):
    venue.on("GET", "/v5/account/wallet-balance", Reply(body=envelope(ret_code=10002, ret_msg="invalid request, please check your server timestamp")))
    with pytest.raises(TransientError) as info:
        gateway.get_wallet()
    assert not isinstance(info.value, (Rejected, NoAnswer))


@pytest.mark.parametrize(
    ("call", "path", "code"),
    [
        (lambda g: g.set_leverage("BTCUSDT", Decimal("3")), "/v5/position/set-leverage", 110043),
        (lambda g: g.set_trading_stop("BTCUSDT", stop_loss=Decimal("20000")), "/v5/position/trading-stop", 34040),
        (lambda g: g.switch_to_one_way("BTCUSDT"), "/v5/position/switch-mode", 110025),
    ],
)
def test_not_modified_is_success(venue, gateway, call, path, code):
    venue.on("POST", path, Reply(body=envelope(ret_code=code, ret_msg="not modified")))
    assert call(gateway) is False
    venue.on("POST", path, Reply(body=envelope()))
    assert call(gateway) is True


def test_empty_position_answer_for_a_symbol_is_not_flat(venue, gateway):
    """DATA-019: an empty list must never read as 'no position'."""
    venue.on("GET", "/v5/position/list", Reply(body=envelope({"list": [], "nextPageCursor": ""})))
    with pytest.raises(MalformedResponse):
        gateway.get_position("BTCUSDT")
    assert len(venue.requests("/v5/position/list")) == 3  # retried like any transient answer


def test_kline_rows_come_back_exactly_as_given(venue, gateway):
    rows = [
        ["1670612400000", "17055.5", "17060", "17050", "17058", "10", "1"],
        ["1670608800000", "17071", "17073", "17027", "17055.5", "268611", "15.74"],
    ]
    venue.on("GET", "/v5/market/kline", Reply(body=envelope({"symbol": "BTCUSDT", "category": "linear", "list": rows})))
    bars = gateway.fetch_klines("BTCUSDT", "60", 1670608800000, 1670612400000, limit=2)
    assert [b.open_ms for b in bars] == [1670612400000, 1670608800000]
    sent = venue.requests("/v5/market/kline")[0].query
    assert sent == {"category": "linear", "symbol": "BTCUSDT", "interval": "60", "start": "1670608800000", "end": "1670612400000", "limit": "2"}


def test_malformed_kline_row_is_a_typed_error(venue, gateway):
    venue.on("GET", "/v5/market/kline", Reply(body=envelope({"symbol": "BTCUSDT", "list": [["1670608800000", "1", "2"]]})))
    with pytest.raises(MalformedResponse):
        gateway.fetch_klines("BTCUSDT", "60", 1670608800000, 1670608800000)


def test_private_call_without_credentials_is_rejected_before_sending(venue):
    gateway = Gateway.create(
        urls=venue.urls, credentials=None, venue=Venue.SIM, trading_mode=TradingMode.PAPER, live_confirmed=False, exchange=ExchangeConfig()
    )
    try:
        with pytest.raises(Rejected):
            gateway.get_wallet()
        assert venue.requests("/v5/account/wallet-balance") == []
    finally:
        gateway.close()


def test_a_far_future_reset_header_cannot_block_a_lane_for_long(venue, gateway):
    """Reset timestamps are venue wall time; a skewed one must not stall a lane for an hour."""
    body = envelope({"list": [{"accountType": "UNIFIED", "totalEquity": "1", "totalWalletBalance": "1", "coin": []}]})
    venue.on("GET", "/v5/account/wallet-balance", Reply(body=body, headers=limit_headers(50, 0, 3_600_000)))
    gateway.get_wallet()
    started = time.monotonic()
    gateway.get_wallet()
    assert time.monotonic() - started < 30  # a capped pause, not the hour the header asks for
