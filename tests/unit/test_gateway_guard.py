"""A paper config can never reach a mainnet order.

The gateway is built for a real-money host, every HTTPS request is routed
through a loopback proxy that records each CONNECT, and the order path is
driven for real. The proof is on the wire: no CONNECT to any Bybit host.
"""

from __future__ import annotations

import socket
import threading
from decimal import Decimal

import pytest
from pydantic import SecretStr

from infra.bybit import Gateway, OrderRefused, OrderRequest, OrderType, venue_urls
from infra.bybit.venue_guard import trading_problems
from infra.config import Credentials, ExchangeConfig, NodeConfig, TradingMode, Venue, load_config
from messages.types import Side

pytestmark = pytest.mark.timeout(20)

CREDS = Credentials(api_key=SecretStr("real-looking-key"), api_secret=SecretStr("real-looking-secret"), source="environment")


class RecordingProxy:
    """Accepts connections on 127.0.0.1, records the first line (CONNECT host:port), answers 502."""

    def __init__(self):
        self.lines: list[str] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    data = conn.recv(4096)
                except OSError:
                    data = b""
                self.lines.append(data.split(b"\r\n", 1)[0].decode(errors="replace"))
                conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")

    def close(self):
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()


@pytest.fixture
def proxy(monkeypatch):
    p = RecordingProxy()
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, p.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    yield p
    p.close()


def buy() -> OrderRequest:
    return OrderRequest(
        symbol="BTCUSDT", side=Side.BUY, order_type=OrderType.MARKET, qty=Decimal("0.01"), reference_price=Decimal("60000"), order_link_id="never-sent"
    )


def every_write(gateway: Gateway):
    yield lambda: gateway.create_order(buy())
    yield lambda: gateway.cancel_order("BTCUSDT", order_link_id="x")
    yield lambda: gateway.cancel_all("BTCUSDT")
    yield lambda: gateway.set_leverage("BTCUSDT", Decimal("2"))
    yield lambda: gateway.set_trading_stop("BTCUSDT", stop_loss=Decimal("1"))
    yield lambda: gateway.switch_to_one_way("BTCUSDT")
    yield lambda: gateway.arm_dcp(10)
    yield lambda: gateway.amend_order("BTCUSDT", order_link_id="x", qty=Decimal("1"))


def test_the_proxy_really_sees_requests_to_bybit(proxy):
    """Control: without the guard in the way, a request to a Bybit host does hit the proxy."""
    node = NodeConfig(venue=Venue.MAINNET, trading_mode=TradingMode.PAPER)
    gateway = Gateway.create(
        urls=venue_urls(Venue.MAINNET, node.exchange),
        credentials=None,
        venue=node.venue,
        trading_mode=node.trading_mode,
        live_confirmed=False,
        exchange=ExchangeConfig(read_attempts=1),
    )
    try:
        with pytest.raises(Exception):
            gateway.server_time()  # a read: allowed, so it goes out (and the proxy says 502)
        assert any("api.bybit.com" in line for line in proxy.lines), proxy.lines
    finally:
        gateway.close()


def test_paper_config_on_mainnet_urls_sends_no_write(proxy):
    # NodeConfig built by hand: load_config would already refuse this pair.
    node = NodeConfig(venue=Venue.MAINNET, trading_mode=TradingMode.PAPER)
    gateway = Gateway.create(
        urls=venue_urls(Venue.MAINNET, node.exchange),
        credentials=CREDS,
        venue=node.venue,
        trading_mode=node.trading_mode,
        live_confirmed=False,
        exchange=node.exchange,
    )
    try:
        for write in every_write(gateway):
            with pytest.raises(OrderRefused) as info:
                write()
            assert info.value.reason == "trading_refused"
        assert proxy.lines == []
    finally:
        gateway.close()


def test_paper_testnet_config_overridden_to_a_mainnet_host_is_refused(proxy, write_config, monkeypatch):
    monkeypatch.setenv("BYBIT_API_KEY", "paper-key")
    monkeypatch.setenv("BYBIT_API_SECRET", "paper-secret")
    monkeypatch.setenv("BYBIT_NODE_EXCHANGE__REST_URL", "https://api.bybit.com")
    app = load_config(write_config("venue: testnet\ntrading_mode: paper\n"))
    gateway = Gateway.from_config(app, venue_urls(app.node.venue, app.node.exchange))
    try:
        assert gateway.urls.rest == "https://api.bybit.com"
        assert gateway.trading_problems()
        with pytest.raises(OrderRefused):
            gateway.create_order(buy())
        assert proxy.lines == []
    finally:
        gateway.close()


def test_live_needs_mainnet_and_confirmation():
    assert trading_problems(Venue.MAINNET, TradingMode.LIVE, True, "https://api.bybit.com") == []
    assert trading_problems(Venue.MAINNET, TradingMode.LIVE, False, "https://api.bybit.com")
    assert trading_problems(Venue.TESTNET, TradingMode.LIVE, True, "https://api-testnet.bybit.com")
    assert trading_problems(Venue.MAINNET, TradingMode.LIVE, True, "http://127.0.0.1:8080")


@pytest.mark.parametrize(
    ("venue", "url"),
    [
        (Venue.SIM, "http://127.0.0.1:5555"),
        (Venue.TESTNET, "https://api-testnet.bybit.com"),
        (Venue.DEMO, "https://api-demo.bybit.com"),
    ],
)
def test_paper_hosts_are_allowed(venue, url):
    assert trading_problems(venue, TradingMode.PAPER, False, url) == []


@pytest.mark.parametrize("url", ["https://api.bybit.com", "https://api.bytick.com", "https://api.bybit.eu", "https://example.com"])
def test_every_other_host_is_refused_for_paper(url):
    assert trading_problems(Venue.TESTNET, TradingMode.PAPER, False, url)
