"""The gateway: every order, cancel, account read and history page goes through here.

Thread-safe and shared: the Executor, Panic, the private-stream reseeds and
the history sync each call it from their own thread. Each call names its
lane (panic > cancel > order > query > backfill, see `rate_limit`); Panic
uses `gateway.on_lane(Lane.PANIC)`, a view on which every call, lookups
included, rides the panic lane and its own connections.

Outcomes:

* reads (`get_*`) and idempotent writes (cancel, cancel-all, leverage,
  trading-stop, switch-mode, DCP) retry transient errors (`sender`);
* `fetch_klines` sends exactly once: the history sync owns its retries;
* `create_order` has a three-way outcome, resolved by orderLinkId
  (`order_entry`).

`Gateway` is one facade over parts that each own one concern, all standing
on one `Sender` (lanes, single attempts, retries, pages):

    market_data        server_time, fetch_klines
    instrument_lookup  instrument (cached per symbol, shared by lane views)
    order_entry        create_order
    order_lookup       get_order
    order_changes      cancel_order, cancel_all, amend_order
    account_settings   set_trading_stop, set_leverage, switch_to_one_way, query_dcp, arm_dcp
    account_reads      get_position(s), get_open_*, get_wallet, get_executions, get_closed_pnl, get_api_key_info
"""

from __future__ import annotations

from typing import Any, Callable

from infra.bybit.account_reads import AccountReads
from infra.bybit.account_settings import AccountSettings
from infra.bybit.clients import VenueUrls, make_http
from infra.bybit.instrument_lookup import InstrumentCache, InstrumentLookup
from infra.bybit.market_data import MarketData
from infra.bybit.order_changes import OrderChanges
from infra.bybit.order_entry import OrderEntry
from infra.bybit.order_lookup import OrderLookup
from infra.bybit.product import CATEGORY
from infra.bybit.rate_limit import Lane, RateLimiter
from infra.bybit.sender import Sender
from infra.bybit.transport import Transport
from infra.bybit.venue_guard import WriteGuard
from infra.config import AppConfig, Credentials, ExchangeConfig, TradingMode, Venue
from infra.logging import get_logger

log = get_logger("gateway")


class Gateway(MarketData, OrderEntry, OrderLookup, OrderChanges, AccountSettings, AccountReads, InstrumentLookup):
    """Typed calls to one Bybit V5 venue. Construct with `Gateway.create` / `from_config`."""

    def __init__(self, sender: Sender, instruments: InstrumentCache):
        self._sender = sender
        self._instruments = instruments

    # --- construction ----------------------------------------------------------

    @classmethod
    def create(
        cls,
        *,
        urls: VenueUrls,
        credentials: Credentials | None,
        venue: Venue,
        trading_mode: TradingMode,
        live_confirmed: bool,
        exchange: ExchangeConfig,
        limiter: RateLimiter | None = None,
        session_factory: Callable[..., Any] = make_http,
    ) -> "Gateway":
        guard = WriteGuard(venue, trading_mode, live_confirmed)
        limiter = limiter or RateLimiter(ip_limit=exchange.ip_limit_per_5s)
        transport = Transport(
            urls,
            credentials,
            limiter,
            connect_timeout_s=float(exchange.rest_connect_timeout_s),
            read_timeout_s=float(exchange.rest_timeout_s),
            recv_window_ms=exchange.recv_window_ms,
            ip_ban_default_s=float(exchange.ip_ban_pause_s),
            write_guard=guard,
            session_factory=session_factory,
        )
        problems = guard.problems(urls.rest)
        log.info(
            "gateway.created",
            venue=venue.value,
            trading_mode=trading_mode.value,
            rest_url=urls.rest,
            trading_allowed=not problems,
            problems=problems or None,
        )
        return cls(Sender(transport, exchange, guard), InstrumentCache())

    @classmethod
    def from_config(cls, app: AppConfig, urls: VenueUrls, **kwargs: Any) -> "Gateway":
        node = app.node
        return cls.create(
            urls=urls,
            credentials=app.credentials,
            venue=node.venue,
            trading_mode=node.trading_mode,
            live_confirmed=node.live_confirmed,
            exchange=node.exchange,
            **kwargs,
        )

    def on_lane(self, lane: Lane) -> "Gateway":
        """A view of this gateway on which every call (lookups too) uses `lane`."""
        return Gateway(self._sender.on_lane(lane), self._instruments)

    def close(self) -> None:
        self._sender.transport.close()

    # --- facts -----------------------------------------------------------------

    @property
    def urls(self) -> VenueUrls:
        return self._sender.transport.urls

    @property
    def limiter(self) -> RateLimiter:
        return self._sender.transport.limiter

    @property
    def exchange_config(self) -> ExchangeConfig:
        return self._sender.exchange

    def trading_problems(self) -> list[str]:
        """Why account-changing calls would be refused (empty: they are allowed)."""
        return self._sender.trading_problems()

    def stats(self) -> dict[str, object]:
        return self._sender.transport.limiter.stats()


__all__ = ["CATEGORY", "Gateway"]
