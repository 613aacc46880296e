"""The gateway: every order, cancel, account read and history page goes through here.

Thread-safe and shared: the Executor, Panic, the private-stream reseeds and
the history sync each call it from their own thread. Each call names its
lane (panic > cancel > order > query > backfill, see `rate_limit`); Panic
uses `gateway.on_lane(Lane.PANIC)`, a view on which every call, lookups
included, rides the panic lane and its own connections.

Outcomes:

* reads (`get_*`) and idempotent writes (cancel, cancel-all, leverage,
  trading-stop, switch-mode, DCP) retry transient errors with bounded,
  jittered exponential backoff that honours the venue's reset time;
* `fetch_klines` sends exactly once: the history sync owns its retries;
* `create_order` returns an `OrderAck` (accepted, acknowledged or found by
  orderLinkId), raises `Rejected` (the venue said no: no order exists),
  `OrderRefused` (never sent), `TransientError`/`RateLimited`/`IpBanned`
  (not accepted: nothing was created), or `OutcomeUnknown` (sent, and the
  order could not be found within `order_lookup_window_s`). Re-sending the
  same request is always safe: the orderLinkId makes a second order
  impossible (110072 resolves to the first).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Iterator, Mapping, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from infra.bybit.clients import VenueUrls, make_http
from infra.bybit.errors import (
    ExchangeError,
    MalformedResponse,
    NoAnswer,
    OrderRefused,
    OutcomeUnknown,
    Rejected,
    TransientError,
)
from infra.bybit.instruments import Instrument, decimal_str
from infra.bybit.models import (
    ApiKeyInfo,
    CancelAck,
    ClosedPnl,
    DcpInfo,
    OrderAck,
    OrderRequest,
    OrderType,
    Resolution,
    ServerTime,
)
from infra.bybit.rate_limit import Lane, RateLimiter
from infra.bybit.transport import Answer, Endpoint, Endpoints, Transport
from infra.bybit.venue_guard import WriteGuard
from infra.config import AppConfig, Credentials, ExchangeConfig, TradingMode, Venue
from infra.logging import get_logger
from messages._parse import MalformedPayload
from messages.account import Execution, Order, OrderStatus, Position, Wallet
from messages.market import ClosedBar
from messages.types import INTERVALS, Side

log = get_logger("gateway")

T = TypeVar("T")

CATEGORY = "linear"
SETTLE_COIN = "USDT"
# "Not modified" answers of idempotent settings: the wanted state already holds.
RET_LEVERAGE_NOT_MODIFIED = 110043
RET_TPSL_NOT_MODIFIED = 34040
RET_MODE_NOT_MODIFIED = 110025
RET_DUPLICATE_LINK_ID = 110072
# Cancel of an order that is no longer open (filled, cancelled, or never there).
RET_ORDER_NOT_OPEN = frozenset({110001, 110008})
_KLINE_MAX = 1000
_PAGE_LIMIT_GUARD = 200  # pages per listing: a runaway cursor must not loop forever
_SEVEN_DAYS_MS = 7 * 24 * 3600 * 1000


@dataclass
class _Core:
    """State shared by every lane view of one gateway."""

    transport: Transport
    exchange: ExchangeConfig
    guard: WriteGuard
    instruments: dict[str, tuple[float, Instrument]]
    instruments_lock: threading.Lock


class Gateway:
    """Typed calls to one Bybit V5 venue. Construct with `Gateway.create` / `from_config`."""

    INSTRUMENT_TTL_S = 3600.0

    def __init__(self, core: _Core, forced_lane: Lane | None = None):
        self._core = core
        self._t = core.transport
        self._cfg = core.exchange
        self._forced_lane = forced_lane

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
        return cls(_Core(transport, exchange, guard, {}, threading.Lock()))

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
        return Gateway(self._core, forced_lane=lane)

    def close(self) -> None:
        self._t.close()

    # --- facts -----------------------------------------------------------------

    @property
    def urls(self) -> VenueUrls:
        return self._t.urls

    @property
    def limiter(self) -> RateLimiter:
        return self._t.limiter

    @property
    def exchange_config(self) -> ExchangeConfig:
        return self._cfg

    def trading_problems(self) -> list[str]:
        """Why account-changing calls would be refused (empty: they are allowed)."""
        return self._core.guard.problems(self._t.urls.rest)

    def stats(self) -> dict[str, object]:
        return self._t.limiter.stats()

    def _writable(self) -> None:
        """Refuse an account-changing call before any request, reads included, leaves.

        The transport checks again on the URL each write is actually sent to.
        """
        self._core.guard(self._t.urls.rest)

    def _lane(self, default: Lane) -> Lane:
        return self._forced_lane if self._forced_lane is not None else default

    @property
    def _wait_s(self) -> float:
        return float(self._cfg.lane_wait_s)

    # --- sending ---------------------------------------------------------------

    def _once(self, endpoint: Endpoint, lane: Lane, params: Mapping[str, Any] | None = None) -> Answer:
        return self._t.call(endpoint, lane, params, wait_s=self._wait_s)

    def _retrying(self, what: str, lane: Lane, fn: Callable[[], T]) -> T:
        """Run `fn` with bounded retries on TransientError (never on a ban or a rejection)."""
        backoff = wait_exponential_jitter(multiplier=0.2, max=float(self._cfg.retry_max_wait_s), jitter=0.2)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            hinted = getattr(exc, "retry_after_s", None) or 0.0
            return max(backoff(state), min(hinted, float(self._cfg.retry_max_wait_s) * 2))

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "gateway.retry",
                call=what,
                lane=lane.name.lower(),
                attempt=state.attempt_number,
                of=self._cfg.read_attempts,
                error=f"{type(exc).__name__}: {exc}",
                wait_s=round(state.upcoming_sleep, 3),
            )

        retrying = Retrying(
            stop=stop_after_attempt(self._cfg.read_attempts),
            wait=wait,
            retry=retry_if_exception_type(TransientError),
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(fn)

    def _read(self, endpoint: Endpoint, lane: Lane, params: Mapping[str, Any] | None = None) -> Answer:
        return self._retrying(endpoint.path, lane, lambda: self._once(endpoint, lane, params))

    def _pages(self, endpoint: Endpoint, lane: Lane, params: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
        """Every `result.list` item over cursor pages, each page with its own retries."""
        cursor: str | None = None
        for _ in range(_PAGE_LIMIT_GUARD):
            page_params = dict(params)
            if cursor:
                page_params["cursor"] = cursor
            answer = self._read(endpoint, lane, page_params)
            items = answer.result.get("list")
            if not isinstance(items, list):
                raise MalformedResponse("result.list missing or not a list", endpoint=endpoint.path)
            yield from items
            cursor = answer.result.get("nextPageCursor") or None
            if not cursor or not items:
                return
        raise MalformedResponse(f"more than {_PAGE_LIMIT_GUARD} pages; cursor does not end", endpoint=endpoint.path)

    # --- market ----------------------------------------------------------------

    def server_time(self) -> ServerTime:
        """The venue's clock and our skew against it (round trip halved)."""
        lane = self._lane(Lane.QUERY)
        before = time.time() * 1000
        answer = self._read(Endpoints.SERVER_TIME, lane)
        after = time.time() * 1000
        nano = answer.result.get("timeNano")
        second = answer.result.get("timeSecond")
        try:
            if nano:
                server_ms = int(str(nano)) // 1_000_000
            elif second:
                server_ms = int(str(second)) * 1000
            elif answer.time_ms:
                server_ms = answer.time_ms
            else:
                raise ValueError("no time in the answer")
        except ValueError as exc:
            raise MalformedResponse(f"server time: {exc}", endpoint=Endpoints.SERVER_TIME.path) from None
        midpoint = (before + after) / 2
        return ServerTime(server_ms=server_ms, skew_ms=round(server_ms - midpoint), round_trip_ms=round(after - before))

    def fetch_klines(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, limit: int = _KLINE_MAX
    ) -> list[ClosedBar]:
        """One page of GET /v5/market/kline on the backfill lane, exactly as the venue gave it.

        Newest first; `start_ms`/`end_ms` inclusive on the bar open time; the
        first row may be the still-open bar. Sent once, no retries (the sync
        owns them); errors are `infra.bybit.errors` types only.
        """
        if interval not in INTERVALS:
            raise ValueError(f"unknown interval {interval!r}")
        if not 1 <= limit <= _KLINE_MAX:
            raise ValueError(f"limit must be within 1..{_KLINE_MAX}, got {limit}")
        if start_ms > end_ms:
            raise ValueError(f"start_ms {start_ms} is after end_ms {end_ms}")
        params = {"category": CATEGORY, "symbol": symbol, "interval": interval, "start": start_ms, "end": end_ms, "limit": limit}
        answer = self._once(Endpoints.KLINE, self._lane(Lane.BACKFILL), params)
        rows = answer.result.get("list")
        if not isinstance(rows, list):
            raise MalformedResponse("kline result.list missing", endpoint=Endpoints.KLINE.path)
        answered_symbol = answer.result.get("symbol")
        if answered_symbol not in (None, "", symbol):
            raise MalformedResponse(f"asked for {symbol}, got {answered_symbol}", endpoint=Endpoints.KLINE.path)
        try:
            return [ClosedBar.from_rest_row(symbol, interval, row) for row in rows]
        except MalformedPayload as exc:
            raise MalformedResponse(str(exc), endpoint=Endpoints.KLINE.path) from None

    def instrument(self, symbol: str) -> Instrument:
        """Tick, step and minimums of `symbol` (cached for an hour)."""
        core = self._core
        now = time.monotonic()
        with core.instruments_lock:
            cached = core.instruments.get(symbol)
        if cached is not None and now - cached[0] < self.INSTRUMENT_TTL_S:
            return cached[1]
        answer = self._read(Endpoints.INSTRUMENTS, self._lane(Lane.QUERY), {"category": CATEGORY, "symbol": symbol})
        items = answer.result.get("list") or []
        match = [i for i in items if isinstance(i, Mapping) and i.get("symbol") == symbol]
        if not match:
            raise Rejected(10001, f"the venue lists no linear instrument {symbol}", endpoint=Endpoints.INSTRUMENTS.path)
        try:
            inst = Instrument.from_bybit(match[0])
        except MalformedPayload as exc:
            raise MalformedResponse(str(exc), endpoint=Endpoints.INSTRUMENTS.path) from None
        with core.instruments_lock:
            core.instruments[symbol] = (now, inst)
        return inst

    # --- orders ----------------------------------------------------------------

    def create_order(self, req: OrderRequest) -> OrderAck:
        """Place one order; see the module docstring for the three outcomes."""
        lane = self._lane(Lane.ORDER)
        self._writable()
        inst = self.instrument(req.symbol)
        try:
            body, qty, price = _order_body(req, inst)
        except OrderRefused as exc:
            log.warning(
                "gateway.order_refused", symbol=req.symbol, order_link_id=req.order_link_id, reason=exc.reason, detail=exc.detail
            )
            raise
        fields = {"symbol": req.symbol, "order_link_id": req.order_link_id, "lane": lane.name.lower()}
        try:
            answer = self._once(Endpoints.CREATE, lane, body)
        except Rejected as exc:
            if exc.ret_code == RET_DUPLICATE_LINK_ID:
                log.info("gateway.order_duplicate", **fields)
                return self._resolve(req, Resolution.DUPLICATE, qty, price, lane, cause=exc)
            log.warning("gateway.order_rejected", **fields, ret_code=exc.ret_code, ret_msg=exc.ret_msg)
            raise
        except NoAnswer as exc:
            log.warning("gateway.order_outcome_unknown", **fields, cause=str(exc))
            return self._resolve(req, Resolution.LOOKED_UP, qty, price, lane, cause=exc)
        except ExchangeError as exc:
            # Not accepted (rate limit, ban, connection refused, clock): nothing was created.
            log.warning("gateway.order_not_sent", **fields, error=f"{type(exc).__name__}: {exc}")
            raise
        order_id = answer.result.get("orderId")
        if not order_id:
            # retCode 0 without an id: it was accepted, but we need the id.
            return self._resolve(req, Resolution.LOOKED_UP, qty, price, lane, cause=None)
        log.info(
            "gateway.order_accepted",
            **fields,
            order_id=order_id,
            side=req.side.value,
            order_type=req.order_type.value,
            qty=decimal_str(qty),
            price=decimal_str(price) if price is not None else None,
            reduce_only=req.reduce_only,
        )
        return OrderAck(
            symbol=req.symbol,
            order_id=str(order_id),
            order_link_id=req.order_link_id,
            resolution=Resolution.ACKNOWLEDGED,
            qty=qty,
            price=price,
            reduce_only=req.reduce_only,
        )

    def _resolve(
        self,
        req: OrderRequest,
        resolution: Resolution,
        qty: Decimal,
        price: Decimal | None,
        lane: Lane,
        cause: Exception | None,
    ) -> OrderAck:
        """Find the order by its orderLinkId, polling: Bybit processes creates asynchronously."""
        deadline = time.monotonic() + float(self._cfg.order_lookup_window_s)
        delay = 0.1
        last_error: Exception | None = cause
        attempts = 0
        while True:
            attempts += 1
            try:
                order = self._find_order(req.symbol, lane, order_link_id=req.order_link_id)
            except ExchangeError as exc:
                order, last_error = None, exc
            if order is not None:
                log.info(
                    "gateway.order_resolved",
                    symbol=req.symbol,
                    order_link_id=req.order_link_id,
                    order_id=order.order_id,
                    order_status=order.order_status.value,
                    resolution=resolution.value,
                    lookups=attempts,
                )
                return OrderAck(
                    symbol=req.symbol,
                    order_id=order.order_id,
                    order_link_id=req.order_link_id,
                    resolution=resolution,
                    order=order,
                    qty=qty,
                    price=price,
                    reduce_only=req.reduce_only,
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.error(
                    "gateway.order_unresolved",
                    symbol=req.symbol,
                    order_link_id=req.order_link_id,
                    lookups=attempts,
                    last_error=str(last_error) if last_error else None,
                )
                raise OutcomeUnknown(
                    f"order {req.order_link_id} not found within {self._cfg.order_lookup_window_s} s; "
                    "re-send the same request (same orderLinkId) or look it up later",
                    order_link_id=req.order_link_id,
                    endpoint=Endpoints.CREATE.path,
                )
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 1.0)

    def _find_order(
        self, symbol: str, lane: Lane, *, order_link_id: str | None = None, order_id: str | None = None
    ) -> Order | None:
        """One pass: open orders, recent closed orders, then order history. No retries."""
        if not (order_link_id or order_id):
            raise ValueError("need order_link_id or order_id")
        key: dict[str, Any] = {"category": CATEGORY, "symbol": symbol}
        if order_id:
            key["orderId"] = order_id
        else:
            key["orderLinkId"] = order_link_id
        for endpoint, extra in (
            (Endpoints.OPEN_ORDERS, {"openOnly": 0}),
            (Endpoints.OPEN_ORDERS, {"openOnly": 1}),
            (Endpoints.ORDER_HISTORY, {}),
        ):
            answer = self._once(endpoint, lane, {**key, **extra})
            for item in answer.result.get("list") or []:
                if not isinstance(item, Mapping):
                    continue
                if order_id and item.get("orderId") != order_id:
                    continue
                if not order_id and item.get("orderLinkId") != order_link_id:
                    continue
                try:
                    return Order.from_bybit(item)
                except MalformedPayload as exc:
                    raise MalformedResponse(str(exc), endpoint=endpoint.path) from None
        return None

    def get_order(self, symbol: str, *, order_link_id: str | None = None, order_id: str | None = None) -> Order | None:
        """The order as the venue knows it (open, recently closed or in history), or None."""
        lane = self._lane(Lane.QUERY)
        return self._retrying(
            "get_order", lane, lambda: self._find_order(symbol, lane, order_link_id=order_link_id, order_id=order_id)
        )

    def cancel_order(self, symbol: str, *, order_id: str | None = None, order_link_id: str | None = None) -> CancelAck:
        """Cancel one order. Rejected 110001/110008: it is not open (filled, cancelled or unknown).

        Retries transient errors (a cancel is idempotent). When an earlier
        attempt got no answer and a later one says "not open", the order is
        looked up: if it is Cancelled, that earlier attempt did it.
        """
        self._writable()
        if not (order_id or order_link_id):
            raise ValueError("need order_id or order_link_id")
        lane = self._lane(Lane.CANCEL)
        params: dict[str, Any] = {"category": CATEGORY, "symbol": symbol}
        if order_id:
            params["orderId"] = order_id
        else:
            params["orderLinkId"] = order_link_id
        unanswered = threading.Event()

        def attempt() -> Answer:
            try:
                return self._once(Endpoints.CANCEL, lane, params)
            except NoAnswer:
                unanswered.set()
                raise

        try:
            answer = self._retrying("cancel_order", lane, attempt)
        except Rejected as exc:
            if exc.ret_code in RET_ORDER_NOT_OPEN and unanswered.is_set():
                order = self._retrying(
                    "cancel_lookup", lane, lambda: self._find_order(symbol, lane, order_link_id=order_link_id, order_id=order_id)
                )
                if order is not None and order.order_status is OrderStatus.CANCELLED:
                    log.info("gateway.order_cancelled", symbol=symbol, order_id=order.order_id, order_link_id=order.order_link_id, lane=lane.name.lower(), by="earlier_attempt")
                    return CancelAck(symbol=symbol, order_id=order.order_id, order_link_id=order.order_link_id)
            log.warning("gateway.cancel_rejected", symbol=symbol, order_id=order_id, order_link_id=order_link_id, ret_code=exc.ret_code, ret_msg=exc.ret_msg)
            raise
        answered_id = answer.result.get("orderId") or order_id
        if not answered_id:
            raise MalformedResponse("cancel answer without orderId", endpoint=Endpoints.CANCEL.path)
        ack = CancelAck(symbol=symbol, order_id=str(answered_id), order_link_id=answer.result.get("orderLinkId") or order_link_id)
        log.info("gateway.order_cancelled", symbol=symbol, order_id=ack.order_id, order_link_id=ack.order_link_id, lane=lane.name.lower(), by="request")
        return ack

    def cancel_all(self, symbol: str, *, order_filter: str | None = None) -> list[CancelAck]:
        """Cancel every open order of `symbol`. `order_filter`: None (all kinds, TP/SL included),

        "Order" (resting orders only: keeps position TP/SL), "StopOrder".
        """
        self._writable()
        lane = self._lane(Lane.CANCEL)
        params: dict[str, Any] = {"category": CATEGORY, "symbol": symbol}
        if order_filter is not None:
            if order_filter not in ("Order", "StopOrder", "OpenOrder"):
                raise ValueError(f"unknown orderFilter {order_filter!r}")
            params["orderFilter"] = order_filter
        answer = self._retrying("cancel_all", lane, lambda: self._once(Endpoints.CANCEL_ALL, lane, params))
        acks = [
            CancelAck(symbol=symbol, order_id=str(i["orderId"]), order_link_id=i.get("orderLinkId") or None)
            for i in answer.result.get("list") or []
            if isinstance(i, Mapping) and i.get("orderId")
        ]
        log.info("gateway.cancel_all", symbol=symbol, order_filter=order_filter, cancelled=len(acks), lane=lane.name.lower())
        return acks

    def amend_order(
        self,
        symbol: str,
        *,
        order_id: str | None = None,
        order_link_id: str | None = None,
        qty: Decimal | None = None,
        price: Decimal | None = None,
        take_profit: Decimal | None = None,
        stop_loss: Decimal | None = None,
        trigger_price: Decimal | None = None,
    ) -> CancelAck:
        """Amend an open order (sent once: on NoAnswer, check with get_order). Prices to the nearest tick."""
        self._writable()
        if not (order_id or order_link_id):
            raise ValueError("need order_id or order_link_id")
        lane = self._lane(Lane.ORDER)
        inst = self.instrument(symbol)
        params: dict[str, Any] = {"category": CATEGORY, "symbol": symbol}
        if order_id:
            params["orderId"] = order_id
        else:
            params["orderLinkId"] = order_link_id
        if qty is not None:
            params["qty"] = decimal_str(inst.checked_qty(qty, market=False, reduce_only=False))
        for name, value in (("price", price), ("takeProfit", take_profit), ("stopLoss", stop_loss), ("triggerPrice", trigger_price)):
            if value is not None:
                params[name] = decimal_str(_tick(inst, value, name))
        if len(params) == 3:
            raise ValueError("nothing to amend")
        answer = self._once(Endpoints.AMEND, lane, params)
        ack = CancelAck(
            symbol=symbol,
            order_id=str(answer.result.get("orderId") or order_id or "?"),
            order_link_id=answer.result.get("orderLinkId") or order_link_id,
        )
        log.info("gateway.order_amended", symbol=symbol, order_id=ack.order_id, order_link_id=ack.order_link_id, changes=sorted(k for k in params if k not in ("category", "symbol", "orderId", "orderLinkId")))
        return ack

    # --- position settings -------------------------------------------------------

    def _idempotent_write(self, what: str, endpoint: Endpoint, lane: Lane, params: Mapping[str, Any], not_modified: int) -> bool:
        """True: the venue changed something; False: it already was so ("not modified")."""
        try:
            self._retrying(what, lane, lambda: self._once(endpoint, lane, params))
        except Rejected as exc:
            if exc.ret_code == not_modified:
                return False
            raise
        return True

    def set_trading_stop(
        self,
        symbol: str,
        *,
        take_profit: Decimal | None = None,
        stop_loss: Decimal | None = None,
        trailing_stop: Decimal | None = None,
        tp_trigger_by: str | None = None,
        sl_trigger_by: str | None = None,
    ) -> bool:
        """Set the position's TP/SL (Full mode, one-way). Decimal(0) removes that leg. False: unchanged."""
        self._writable()
        inst = self.instrument(symbol)
        params: dict[str, Any] = {"category": CATEGORY, "symbol": symbol, "tpslMode": "Full", "positionIdx": 0}
        for name, value in (("takeProfit", take_profit), ("stopLoss", stop_loss), ("trailingStop", trailing_stop)):
            if value is None:
                continue
            params[name] = "0" if value == 0 else decimal_str(_tick(inst, value, name))
        if tp_trigger_by:
            params["tpTriggerBy"] = tp_trigger_by
        if sl_trigger_by:
            params["slTriggerBy"] = sl_trigger_by
        changed = self._idempotent_write("set_trading_stop", Endpoints.TRADING_STOP, self._lane(Lane.ORDER), params, RET_TPSL_NOT_MODIFIED)
        log.info("gateway.trading_stop_set", symbol=symbol, take_profit=params.get("takeProfit"), stop_loss=params.get("stopLoss"), changed=changed)
        return changed

    def set_leverage(self, symbol: str, leverage: Decimal) -> bool:
        """Same leverage both sides (one-way). False: it already was that."""
        self._writable()
        inst = self.instrument(symbol)
        rounded = inst.round_leverage(leverage)
        if rounded < inst.min_leverage or rounded > inst.max_leverage:
            raise OrderRefused(
                "leverage_out_of_range", f"{symbol}: {leverage} outside [{inst.min_leverage}, {inst.max_leverage}]"
            )
        value = decimal_str(rounded)
        params = {"category": CATEGORY, "symbol": symbol, "buyLeverage": value, "sellLeverage": value}
        changed = self._idempotent_write("set_leverage", Endpoints.SET_LEVERAGE, self._lane(Lane.ORDER), params, RET_LEVERAGE_NOT_MODIFIED)
        log.info("gateway.leverage_set", symbol=symbol, leverage=value, changed=changed)
        return changed

    def switch_to_one_way(self, symbol: str) -> bool:
        """Put `symbol` in one-way mode. False: it already was. Rejected 110024/110028: positions or orders block it."""
        self._writable()
        params = {"category": CATEGORY, "symbol": symbol, "mode": 0}
        return self._idempotent_write("switch_mode", Endpoints.SWITCH_MODE, self._lane(Lane.ORDER), params, RET_MODE_NOT_MODIFIED)

    # --- disconnect-cancel-all ------------------------------------------------------

    def query_dcp(self) -> DcpInfo:
        """Whether the account has DCP for derivatives (granted per account by Bybit)."""
        lane = self._lane(Lane.QUERY)
        try:
            answer = self._read(Endpoints.DCP_INFO, lane)
        except Rejected as exc:
            log.warning("gateway.dcp_query_rejected", ret_code=exc.ret_code, ret_msg=exc.ret_msg)
            return DcpInfo(available=False)
        for info in answer.result.get("dcpInfos") or []:
            if isinstance(info, Mapping) and info.get("product") == "DERIVATIVES":
                try:
                    window = int(str(info.get("timeWindow") or "0")) or None
                except ValueError:
                    window = None
                return DcpInfo(available=True, enabled=str(info.get("dcpStatus", "")).upper() == "ON", window_s=window)
        return DcpInfo(available=False)

    def arm_dcp(self, window_s: int) -> None:
        """Set the derivatives DCP window. Only effective while a private socket subscribes `dcp.future`."""
        self._writable()
        if not 3 <= window_s <= 300:
            raise ValueError("the DCP window must be within 3..300 s")
        lane = self._lane(Lane.ORDER)
        params = {"product": "DERIVATIVES", "timeWindow": window_s}
        self._retrying("set_dcp", lane, lambda: self._once(Endpoints.SET_DCP, lane, params))

    # --- account reads ----------------------------------------------------------------

    def get_position_rows(self, symbol: str) -> list[Position]:
        """Every position row of `symbol` (one in one-way mode, two in hedge mode).

        Bybit answers a symbol query with the row even when flat, so an empty
        list is not "flat" but a broken answer (DATA-019): MalformedResponse.
        """
        lane = self._lane(Lane.QUERY)

        def fetch() -> list[Position]:
            answer = self._once(Endpoints.POSITIONS, lane, {"category": CATEGORY, "symbol": symbol})
            items = answer.result.get("list") or []
            rows = [i for i in items if isinstance(i, Mapping) and i.get("symbol") == symbol]
            if not rows:
                raise MalformedResponse(
                    f"no position row for {symbol}: a symbol query always returns one, so this is not 'flat'",
                    endpoint=Endpoints.POSITIONS.path,
                )
            try:
                return [Position.from_bybit(r) for r in rows]
            except MalformedPayload as exc:
                raise MalformedResponse(str(exc), endpoint=Endpoints.POSITIONS.path) from None

        return self._retrying("get_position", lane, fetch)

    def get_position(self, symbol: str) -> Position:
        """The one-way position of `symbol` (flat: size 0). Never guesses from an empty answer."""
        rows = self.get_position_rows(symbol)
        if len(rows) != 1 or rows[0].position_idx != 0:
            raise ExchangeError(f"{symbol} is not in one-way mode (positionIdx {[r.position_idx for r in rows]})")
        return rows[0]

    def get_positions(self, symbols: list[str] | tuple[str, ...]) -> dict[str, Position]:
        """One strict symbol query each: a position that exists can never go missing."""
        return {s: self.get_position(s) for s in symbols}

    def get_open_positions(self) -> list[Position]:
        """Open positions of every USDT contract (settleCoin query; only size > 0 come back).

        An empty list here cannot be told apart from a venue that dropped the
        rows; to conclude "flat" for a symbol, use `get_position(symbol)`.
        """
        items = self._pages(Endpoints.POSITIONS, self._lane(Lane.QUERY), {"category": CATEGORY, "settleCoin": SETTLE_COIN, "limit": 200})
        try:
            return [p for p in (Position.from_bybit(i) for i in items) if p.is_open]
        except MalformedPayload as exc:
            raise MalformedResponse(str(exc), endpoint=Endpoints.POSITIONS.path) from None

    def get_open_orders(self, symbol: str | None = None, *, order_filter: str | None = None) -> list[Order]:
        """Open orders (conditional ones included unless filtered), of `symbol` or of every USDT contract."""
        params: dict[str, Any] = {"category": CATEGORY, "openOnly": 0, "limit": 50}
        params.update({"symbol": symbol} if symbol else {"settleCoin": SETTLE_COIN})
        if order_filter:
            params["orderFilter"] = order_filter
        items = self._pages(Endpoints.OPEN_ORDERS, self._lane(Lane.QUERY), params)
        try:
            return [Order.from_bybit(i) for i in items]
        except MalformedPayload as exc:
            raise MalformedResponse(str(exc), endpoint=Endpoints.OPEN_ORDERS.path) from None

    def get_wallet(self) -> Wallet:
        answer = self._read(Endpoints.WALLET, self._lane(Lane.QUERY), {"accountType": "UNIFIED"})
        items = answer.result.get("list") or []
        if not items:
            raise MalformedResponse("wallet-balance without an account", endpoint=Endpoints.WALLET.path)
        try:
            return Wallet.from_bybit(items[0], answer.time_ms or int(time.time() * 1000))
        except MalformedPayload as exc:
            raise MalformedResponse(str(exc), endpoint=Endpoints.WALLET.path) from None

    def get_executions(
        self,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        symbol: str | None = None,
        exec_type: str | None = None,
    ) -> list[Execution]:
        """Executions (fills, funding), newest first per 7-day chunk; longer ranges are split."""
        base: dict[str, Any] = {"category": CATEGORY, "limit": 100}
        if symbol:
            base["symbol"] = symbol
        if exec_type:
            base["execType"] = exec_type
        out: list[Execution] = []
        for chunk in _seven_day_chunks(start_ms, end_ms):
            try:
                out += [Execution.from_bybit(i) for i in self._pages(Endpoints.EXECUTIONS, self._lane(Lane.QUERY), {**base, **chunk})]
            except MalformedPayload as exc:
                raise MalformedResponse(str(exc), endpoint=Endpoints.EXECUTIONS.path) from None
        return out

    def get_closed_pnl(self, *, start_ms: int | None = None, end_ms: int | None = None, symbol: str | None = None) -> list[ClosedPnl]:
        base: dict[str, Any] = {"category": CATEGORY, "limit": 100}
        if symbol:
            base["symbol"] = symbol
        out: list[ClosedPnl] = []
        for chunk in _seven_day_chunks(start_ms, end_ms):
            try:
                out += [ClosedPnl.from_bybit(i) for i in self._pages(Endpoints.CLOSED_PNL, self._lane(Lane.QUERY), {**base, **chunk})]
            except MalformedPayload as exc:
                raise MalformedResponse(str(exc), endpoint=Endpoints.CLOSED_PNL.path) from None
        return out

    def get_api_key_info(self) -> ApiKeyInfo:
        answer = self._read(Endpoints.API_KEY, self._lane(Lane.QUERY))
        try:
            return ApiKeyInfo.from_bybit(answer.result)
        except (MalformedPayload, ValueError, TypeError) as exc:
            raise MalformedResponse(f"api key info: {exc}", endpoint=Endpoints.API_KEY.path) from None


# --- helpers ----------------------------------------------------------------------


def _tick(inst: Instrument, value: Decimal, what: str) -> Decimal:
    return inst.checked_price(inst.round_trigger_price(value), what)


def _order_body(req: OrderRequest, inst: Instrument) -> tuple[dict[str, Any], Decimal, Decimal | None]:
    """The create body, rounded to the instrument; OrderRefused if it breaks a rule."""
    if not inst.is_trading:
        raise OrderRefused("instrument_not_trading", f"{req.symbol} status is {inst.status}")
    market = req.order_type is OrderType.MARKET
    qty = inst.checked_qty(req.qty, market=market, reduce_only=req.reduce_only)
    price = None
    if req.price is not None:
        price = inst.checked_price(inst.round_limit_price(req.price, req.side), "price")
    if not req.reduce_only:
        reference = price if price is not None else req.reference_price
        assert reference is not None  # OrderRequest guarantees it for opening orders
        inst.check_notional(qty, reference)
    body: dict[str, Any] = {
        "category": CATEGORY,
        "symbol": req.symbol,
        "side": req.side.value,
        "orderType": req.order_type.value,
        "qty": decimal_str(qty),
        "positionIdx": 0,
        "orderLinkId": req.order_link_id,
        "reduceOnly": req.reduce_only,
    }
    if price is not None:
        body["price"] = decimal_str(price)
    if req.time_in_force:
        body["timeInForce"] = req.time_in_force
    if req.close_on_trigger:
        body["closeOnTrigger"] = True
    if req.take_profit is not None:
        body["takeProfit"] = decimal_str(_tick(inst, req.take_profit, "take_profit"))
    if req.stop_loss is not None:
        body["stopLoss"] = decimal_str(_tick(inst, req.stop_loss, "stop_loss"))
    if req.tp_trigger_by:
        body["tpTriggerBy"] = req.tp_trigger_by
    if req.sl_trigger_by:
        body["slTriggerBy"] = req.sl_trigger_by
    _check_protective_sides(req, body)
    return body, qty, price


def _check_protective_sides(req: OrderRequest, body: Mapping[str, Any]) -> None:
    """After rounding, a long's stop must still be below its take-profit (and the reverse)."""
    tp, sl = body.get("takeProfit"), body.get("stopLoss")
    if tp is None or sl is None:
        return
    tp_d, sl_d = Decimal(tp), Decimal(sl)
    if (req.side is Side.BUY and not sl_d < tp_d) or (req.side is Side.SELL and not tp_d < sl_d):
        raise OrderRefused("tpsl_inverted", f"{req.symbol}: take-profit {tp} and stop-loss {sl} on the wrong sides")


def _seven_day_chunks(start_ms: int | None, end_ms: int | None) -> Iterator[dict[str, int]]:
    """Bybit serves at most 7 days per execution / closed-PnL query."""
    if start_ms is None or end_ms is None:
        chunk: dict[str, int] = {}
        if start_ms is not None:
            chunk["startTime"] = start_ms
        if end_ms is not None:
            chunk["endTime"] = end_ms
        yield chunk
        return
    if start_ms > end_ms:
        raise ValueError("start_ms is after end_ms")
    cursor = start_ms
    while cursor <= end_ms:
        stop = min(cursor + _SEVEN_DAYS_MS - 1, end_ms)
        yield {"startTime": cursor, "endTime": stop}
        cursor = stop + 1


__all__ = ["CATEGORY", "Gateway"]
