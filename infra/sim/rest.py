"""The REST side: `/v5/...` with Bybit's envelope, auth, limits and faults.

Business errors are HTTP 200 with a non-zero retCode (REFERENCE.md 2.1);
only the IP ban (403), unknown paths (404) and injected 5xx use the HTTP
status. Handlers run on the event loop and never block it.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from aiohttp import web

from infra.logging import get_logger
from infra.sim import cancel_amend, dcp, listings, order_entry, position_settings
from infra.sim.auth import check_rest_auth
from infra.sim.clock import wall_ms
from infra.sim.history import DEFAULT_LIMIT, MAX_LIMIT, bars_for, rest_row, select_opens
from infra.sim.params import int_param, market_category
from infra.sim.ratelimit import limit_headers
from infra.sim.wire import TOO_MANY_VISITS, Raw, SimError, dumps, envelope, param_error
from messages.types import INTERVALS

if TYPE_CHECKING:
    from infra.sim.account import Account
    from infra.sim.exchange import Exchange

log = get_logger("sim")

Params = dict[str, Any]
Handler = Callable[["Exchange", Params, int], Any]


@dataclass(frozen=True)
class Route:
    method: str
    fn: Handler
    private: bool


ROUTES: dict[str, Route] = {}


def route(method: str, path: str, private: bool = False) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        ROUTES[path] = Route(method, fn, private)
        return fn

    return register


def _json(body: dict, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=dumps(body), status=status, content_type="application/json", headers=headers)


async def handle(request: web.Request) -> web.StreamResponse:
    from infra.sim.exchange import EXCHANGE  # noqa: PLC0415 - exchange imports this module

    ex: Exchange = request.app[EXCHANGE]
    path = request.path
    faults = ex.faults.state
    if faults.ip_ban.active() or not ex.ip_limiter.hit():
        return web.Response(status=403, text="403 Forbidden: access too frequent")
    if faults.http_error.take(path):
        return web.Response(status=int(faults.http_error.value), text="Service Unavailable")
    if faults.delay.take(path):
        await asyncio.sleep(float(faults.delay.value))
    target = ROUTES.get(path)
    if target is None or target.method != request.method:
        return web.Response(status=404, text="404 page not found")
    if request.method == "GET":
        payload = request.rel_url.raw_query_string.encode()
    else:
        payload = await request.read()
    headers: dict[str, str] = {}
    now = ex.now()
    try:
        if target.private:
            key = check_rest_auth(request.headers, payload, ex.keys)
            allowed, headers = ex.endpoint_limiter.hit(key, path)
            forced = faults.rate_limited.get(path)
            if forced is not None and forced.take(path):
                reset = wall_ms() + max(1, min(forced.remaining_ms(), 60_000))
                allowed, headers = False, limit_headers(ex.endpoint_limiter.limits.get(path, 10), 0, reset)
            chance = faults.random_rate_limit
            if allowed and chance.active():
                probability, reset_ms, draws = chance.value
                if draws.random() < probability:
                    reset = wall_ms() + reset_ms
                    allowed, headers = False, limit_headers(ex.endpoint_limiter.limits.get(path, 10), 0, reset)
            if not allowed:
                raise SimError(TOO_MANY_VISITS, "Too many visits!")
        params = _params(request, payload)
        result = target.fn(ex, params, now)
        if isinstance(result, Raw):
            body: dict = dict(result)
        else:
            body = envelope(result, now)
    except SimError as err:
        body = envelope({}, now, err.code, err.msg)
    except Exception as exc:  # noqa: BLE001 - a simulator bug: answer like a venue outage, log loudly
        log.error("sim.rest.failed", path=path, error=repr(exc), exc_info=True)
        return web.Response(status=500, text="Internal Server Error")
    if path == "/v5/order/create" and body.get("retCode") == 0 and faults.timeout_creates.take():
        # Accepted, but the answer never arrives in time: the ambiguous outcome.
        await asyncio.sleep(float(faults.timeout_creates.value))
    return _json(body, headers=headers)


def _params(request: web.Request, payload: bytes) -> Params:
    if request.method == "GET":
        return {k: v for k, v in request.query.items()}
    if not payload:
        return {}
    try:
        data = json.loads(payload)
    except ValueError:
        raise param_error("params error: request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise param_error("params error: request body must be a JSON object")
    return data


# --- market ------------------------------------------------------------------------------


@route("GET", "/v5/market/time")
def market_time(ex: "Exchange", p: Params, now: int) -> Any:
    return {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)}


@route("GET", "/v5/market/kline")
def market_kline(ex: "Exchange", p: Params, now: int) -> Any:
    market_category(p, required=False)
    symbol = p.get("symbol")
    if not symbol:
        raise param_error("params error: symbol is required")
    if symbol not in ex.models:
        raise param_error("Not supported symbols")
    interval = p.get("interval")
    if interval not in INTERVALS:
        raise param_error("Invalid period!")
    start = int_param(p, "start", lo=0)
    end = int_param(p, "end", lo=0)
    limit = int_param(p, "limit", DEFAULT_LIMIT, lo=1)
    assert limit is not None
    limit = min(limit, MAX_LIMIT)
    model = ex.models[symbol]
    opens = select_opens(interval, now, model.inst.launch_ms, start, end, limit, ex.hole_by_symbol[symbol])
    rows = [rest_row(model, bar) for bar in bars_for(model, interval, opens, now)]
    return {"symbol": symbol, "category": "linear", "list": rows}


@route("GET", "/v5/market/tickers")
def market_tickers(ex: "Exchange", p: Params, now: int) -> Any:
    market_category(p)
    value = p.get("symbol")
    if value and value not in ex.models:
        raise param_error("Not supported symbols")
    symbols = [value] if value else list(ex.models)
    return {"category": "linear", "list": [ex.feed.rest_ticker(s, now) for s in symbols]}


@route("GET", "/v5/market/instruments-info")
def market_instruments(ex: "Exchange", p: Params, now: int) -> Any:
    market_category(p)
    value = p.get("symbol")
    status = p.get("status") or "Trading"
    base = p.get("baseCoin")
    items = []
    for symbol, model in ex.models.items():
        inst = model.inst
        if value and symbol != value or base and inst.base_coin != base or status != "Trading":
            continue
        items.append(instrument_info(inst))
    return {"category": "linear", "list": items, "nextPageCursor": ""}


def instrument_info(inst: Any) -> dict:
    q = inst.qty_str
    tick = inst.price_str(1)
    return {
        "symbol": inst.symbol,
        "symbolId": inst.symbol_id,
        "contractType": "LinearPerpetual",
        "status": "Trading",
        "baseCoin": inst.base_coin,
        "quoteCoin": "USDT",
        "launchTime": str(inst.launch_ms),
        "deliveryTime": "0",
        "deliveryFeeRate": "",
        "priceScale": str(inst.price_scale),
        "leverageFilter": {"minLeverage": "1", "maxLeverage": f"{inst.max_leverage:.2f}", "leverageStep": "0.01"},
        "priceFilter": {"minPrice": tick, "maxPrice": inst.price_str(inst.to_ticks(inst.p0) * 30), "tickSize": tick},
        "lotSizeFilter": {
            "maxOrderQty": q(inst.to_steps(inst.max_qty)),
            "minOrderQty": q(inst.to_steps(inst.min_qty)),
            "qtyStep": q(1),
            "postOnlyMaxOrderQty": q(inst.to_steps(inst.max_qty)),
            "maxMktOrderQty": q(inst.to_steps(inst.max_mkt_qty)),
            "minNotionalValue": str(inst.min_notional),
        },
        "unifiedMarginTrade": True,
        "fundingInterval": 480,
        "settleCoin": "USDT",
        "copyTrading": "both",
        "upperFundingRate": "0.005",
        "lowerFundingRate": "-0.005",
        "displayName": "",
        "forbidUplWithdrawal": False,
        "isPreListing": False,
        "preListingInfo": None,
        "riskParameters": {"priceLimitRatioX": "0.01", "priceLimitRatioY": "0.02"},
        "symbolType": "",
    }


# --- account (private) ----------------------------------------------------------------------

AccountHandler = Callable[["Account", Params, int], Any]


def _account(method: str, path: str, fn: AccountHandler) -> None:
    def handler(ex: "Exchange", p: Params, now: int) -> Any:
        return fn(ex.account, p, now)

    handler.__name__ = fn.__name__
    route(method, path, private=True)(handler)


for _method, _path, _fn in (
    ("POST", "/v5/order/create", order_entry.create_order),
    ("POST", "/v5/order/amend", cancel_amend.amend_order),
    ("POST", "/v5/order/cancel", cancel_amend.cancel_order),
    ("POST", "/v5/order/cancel-all", cancel_amend.cancel_all),
    ("GET", "/v5/order/realtime", listings.realtime),
    ("GET", "/v5/order/history", listings.history),
    ("POST", "/v5/order/disconnected-cancel-all", dcp.set_dcp),
    ("GET", "/v5/execution/list", listings.execution_list),
    ("GET", "/v5/position/list", listings.position_list),
    ("GET", "/v5/position/closed-pnl", listings.closed_pnl_list),
    ("POST", "/v5/position/trading-stop", position_settings.trading_stop),
    ("POST", "/v5/position/set-leverage", position_settings.set_leverage),
    ("POST", "/v5/position/switch-mode", position_settings.switch_mode),
    ("GET", "/v5/account/wallet-balance", listings.wallet_balance),
    ("GET", "/v5/account/fee-rate", listings.fee_rate),
    ("GET", "/v5/account/query-dcp-info", dcp.dcp_info),
):
    _account(_method, _path, _fn)


@route("GET", "/v5/user/query-api", private=True)
def user_query_api(ex: "Exchange", p: Params, now: int) -> Any:
    return listings.api_key_info(ex.account, ex.api_key)
