"""Build pybit clients for a venue: real Bybit hosts, or the loopback simulator.

pybit fixes its URLs at construction (REFERENCE.md section 6). The least
invasive overrides, both pinned by tests/integration/test_pybit_routing.py
so that a pybit upgrade that breaks them fails loudly:

* HTTP: every call builds `f"{self.endpoint}{path}"`, so assigning
  `endpoint` after construction reroutes all requests.
* WebSocket: the constructor connects at once, and reconnects call
  `self._connect(self.endpoint)`; a subclass that substitutes its own URL in
  `_connect` covers both, per instance, without touching module globals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pybit.unified_trading import HTTP, WebSocket

from infra.config import Credentials, ExchangeConfig, Venue


@dataclass(frozen=True)
class VenueUrls:
    rest: str
    ws_public: str
    ws_private: str


_OFFICIAL: dict[Venue, VenueUrls] = {
    Venue.MAINNET: VenueUrls(
        rest="https://api.bybit.com",
        ws_public="wss://stream.bybit.com/v5/public/linear",
        ws_private="wss://stream.bybit.com/v5/private",
    ),
    Venue.TESTNET: VenueUrls(
        rest="https://api-testnet.bybit.com",
        ws_public="wss://stream-testnet.bybit.com/v5/public/linear",
        ws_private="wss://stream-testnet.bybit.com/v5/private",
    ),
    # Demo trading serves only private streams; public data comes from mainnet.
    Venue.DEMO: VenueUrls(
        rest="https://api-demo.bybit.com",
        ws_public="wss://stream.bybit.com/v5/public/linear",
        ws_private="wss://stream-demo.bybit.com/v5/private",
    ),
}


def simulator_urls(rest: str) -> VenueUrls:
    """The simulator serves REST and both WebSockets on one port."""
    base = rest.rstrip("/")
    ws = "ws" + base[len("http"):] if base.startswith("http") else base
    return VenueUrls(rest=base, ws_public=f"{ws}/v5/public/linear", ws_private=f"{ws}/v5/private")


def venue_urls(venue: Venue, exchange: ExchangeConfig, sim: VenueUrls | None = None) -> VenueUrls:
    """Official hosts for the venue (or the running simulator's), with config overrides."""
    if venue is Venue.SIM:
        if sim is None:
            raise ValueError("venue 'sim' needs the running simulator's URLs")
        base = sim
    else:
        base = _OFFICIAL[venue]
    return VenueUrls(
        rest=exchange.rest_url or base.rest,
        ws_public=exchange.ws_public_url or base.ws_public,
        ws_private=exchange.ws_private_url or base.ws_private,
    )


def make_http(urls: VenueUrls, credentials: Credentials | None, **kwargs: Any) -> HTTP:
    """A pybit HTTP session whose every request goes to `urls.rest`."""
    keys = {}
    if credentials is not None:
        keys = {
            "api_key": credentials.api_key.get_secret_value(),
            "api_secret": credentials.api_secret.get_secret_value(),
        }
    session = HTTP(testnet=False, **keys, **kwargs)
    session.endpoint = urls.rest.rstrip("/")
    return session


class RoutedWebSocket(WebSocket):
    """pybit's WebSocket, connecting (and reconnecting) to a given URL."""

    def __init__(self, *args: Any, ws_url: str, **kwargs: Any):
        self._routed_url = ws_url  # must exist before super().__init__, which connects
        super().__init__(*args, **kwargs)

    def _connect(self, url: str) -> Any:  # noqa: ARG002 - pybit passes its own template
        return super()._connect(self._routed_url)


def make_public_ws(urls: VenueUrls, **kwargs: Any) -> RoutedWebSocket:
    return RoutedWebSocket(channel_type="linear", testnet=False, ws_url=urls.ws_public, **kwargs)


def make_private_ws(urls: VenueUrls, credentials: Credentials, **kwargs: Any) -> RoutedWebSocket:
    # pybit's default auth expiry of 1 s fails under modest clock skew (pybit#300).
    kwargs.setdefault("private_auth_expire", 10)
    return RoutedWebSocket(
        channel_type="private",
        testnet=False,
        ws_url=urls.ws_private,
        api_key=credentials.api_key.get_secret_value(),
        api_secret=credentials.api_secret.get_secret_value(),
        **kwargs,
    )
