"""The only way the node talks to Bybit's REST API: one gateway, typed calls, typed errors.

    from infra.bybit import Gateway, Lane, OrderRequest, OrderType, order_link_id

    gateway = Gateway.from_config(app, urls)          # shared; thread-safe
    bars = gateway.fetch_klines("BTCUSDT", "1", start_ms, end_ms)   # backfill lane, sent once
    ack = gateway.create_order(OrderRequest(...))      # order lane, three-way outcome
    panic = gateway.on_lane(Lane.PANIC)                # Panic's own lane, never behind anything

Errors: `infra.bybit.errors` (ExchangeError and its children).
Startup: `prepare_account` (one-way mode, DCP) and `run_preflight`.
WebSockets are built by `infra.bybit.clients` (`make_public_ws`, `make_private_ws`).
"""

from infra.bybit.clients import VenueUrls, make_private_ws, make_public_ws, venue_urls
from infra.bybit.errors import (
    ExchangeError,
    IpBanned,
    MalformedResponse,
    NoAnswer,
    OrderRefused,
    OutcomeUnknown,
    RateLimited,
    Rejected,
    TransientError,
)
from infra.bybit.gateway import Gateway
from infra.bybit.instruments import Instrument
from infra.bybit.models import (
    AmendAck,
    ApiKeyInfo,
    CancelAck,
    ClosedPnl,
    DcpInfo,
    OrderAck,
    OrderRequest,
    OrderType,
    Resolution,
    ServerTime,
    new_order_link_id,
    order_link_id,
)
from infra.bybit.rate_limit import Lane, RateLimiter

__all__ = [
    "AmendAck",
    "ApiKeyInfo",
    "CancelAck",
    "ClosedPnl",
    "DcpInfo",
    "ExchangeError",
    "Gateway",
    "Instrument",
    "IpBanned",
    "Lane",
    "MalformedResponse",
    "NoAnswer",
    "OrderAck",
    "OrderRefused",
    "OrderRequest",
    "OrderType",
    "OutcomeUnknown",
    "RateLimited",
    "RateLimiter",
    "Rejected",
    "Resolution",
    "ServerTime",
    "TransientError",
    "VenueUrls",
    "make_private_ws",
    "make_public_ws",
    "new_order_link_id",
    "order_link_id",
    "venue_urls",
]
