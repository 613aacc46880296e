"""One request to the venue: admission, a pybit session, error mapping, header bookkeeping.

pybit is configured so that it never retries on its own (REFERENCE.md 5.1):
its retry loop swallows the retCode of 10006/10002 answers, sleeps on the
caller's thread (and crashes with ValueError on a reset time in the past),
and with `force_retry` re-sends an order create whose first copy may have
been accepted. So: one attempt per call, `retry_codes` holding only a code
that never occurs (an empty set is silently replaced by pybit's defaults),
and `return_response_headers=True` so every answer feeds the rate limiter.

Every failure leaves here as an `infra.bybit.errors` type:

    read timeout, dropped connection, 5xx, retCode 10000/10016  -> NoAnswer
    connection refused / connect timeout (nothing was sent)      -> TransientError
    retCode 10006, HTTP 429                                       -> RateLimited
    HTTP 403                                                      -> IpBanned
    retCode 10002 (timestamp outside recv_window: not accepted)   -> TransientError
    any other retCode, HTTP 400/401/404                           -> Rejected
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import requests
from pybit.exceptions import FailedRequestError, InvalidRequestError
from pybit.unified_trading import HTTP

from infra.bybit.clients import VenueUrls, make_http
from infra.bybit.errors import (
    ExchangeError,
    IpBanned,
    MalformedResponse,
    NoAnswer,
    RateLimited,
    Rejected,
    TransientError,
)
from infra.bybit.rate_limit import Lane, LimitHeaders, RateLimiter
from infra.config import Credentials
from infra.logging import get_logger

log = get_logger("gateway")

# pybit replaces an empty retry_codes with its defaults; this code never occurs.
_NO_RETRY_CODES = frozenset({-2_147_483_648})
# Answers that say the backend may or may not have carried the request out.
_AMBIGUOUS_RET_CODES = frozenset({10000, 10016})
_RATE_LIMIT_RET_CODES = frozenset({10006, 10018})
_TIMESTAMP_RET_CODE = 10002
# Reset timestamps are the venue's wall clock, compared with ours (as pybit
# does): Bybit's endpoint windows are one second, so a reset much further out
# is clock skew, not budget, and is capped.
_MAX_RETRY_AFTER_S = 10.0
_MIN_RETRY_AFTER_S = 0.05
_MAX_SOFT_RESET_S = 1.5


@dataclass(frozen=True)
class Endpoint:
    """One venue endpoint as the gateway uses it."""

    path: str
    method: str
    pybit_call: str
    private: bool
    # Changes account state: refused when the venue/mode guard says no.
    writes: bool = False


class Endpoints:
    SERVER_TIME = Endpoint("/v5/market/time", "GET", "get_server_time", private=False)
    KLINE = Endpoint("/v5/market/kline", "GET", "get_kline", private=False)
    TICKERS = Endpoint("/v5/market/tickers", "GET", "get_tickers", private=False)
    INSTRUMENTS = Endpoint("/v5/market/instruments-info", "GET", "get_instruments_info", private=False)
    CREATE = Endpoint("/v5/order/create", "POST", "place_order", private=True, writes=True)
    AMEND = Endpoint("/v5/order/amend", "POST", "amend_order", private=True, writes=True)
    CANCEL = Endpoint("/v5/order/cancel", "POST", "cancel_order", private=True, writes=True)
    CANCEL_ALL = Endpoint("/v5/order/cancel-all", "POST", "cancel_all_orders", private=True, writes=True)
    OPEN_ORDERS = Endpoint("/v5/order/realtime", "GET", "get_open_orders", private=True)
    ORDER_HISTORY = Endpoint("/v5/order/history", "GET", "get_order_history", private=True)
    POSITIONS = Endpoint("/v5/position/list", "GET", "get_positions", private=True)
    TRADING_STOP = Endpoint("/v5/position/trading-stop", "POST", "set_trading_stop", private=True, writes=True)
    SET_LEVERAGE = Endpoint("/v5/position/set-leverage", "POST", "set_leverage", private=True, writes=True)
    SWITCH_MODE = Endpoint("/v5/position/switch-mode", "POST", "switch_position_mode", private=True, writes=True)
    WALLET = Endpoint("/v5/account/wallet-balance", "GET", "get_wallet_balance", private=True)
    EXECUTIONS = Endpoint("/v5/execution/list", "GET", "get_executions", private=True)
    CLOSED_PNL = Endpoint("/v5/position/closed-pnl", "GET", "get_closed_pnl", private=True)
    DCP_INFO = Endpoint("/v5/account/query-dcp-info", "GET", "query_dcp_info", private=True)
    SET_DCP = Endpoint("/v5/order/disconnected-cancel-all", "POST", "set_dcp", private=True, writes=True)
    API_KEY = Endpoint("/v5/user/query-api", "GET", "get_api_key_information", private=True)


@dataclass(frozen=True)
class Answer:
    """A retCode-0 answer: `result` (never None), the venue's `time` (ms) when it sent one."""

    result: Mapping[str, Any]
    time_ms: int | None
    headers: LimitHeaders


class Transport:
    """Sends one request per call; thread-safe. One pool of pybit sessions per lane,

    so the panic lane never waits for a connection another lane holds.
    """

    def __init__(
        self,
        urls: VenueUrls,
        credentials: Credentials | None,
        limiter: RateLimiter,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        recv_window_ms: int,
        ip_ban_default_s: float,
        write_guard: Callable[[str], None],
        session_factory: Callable[..., HTTP] = make_http,
    ):
        self.urls = urls
        self.limiter = limiter
        self._credentials = credentials
        self._session_kwargs = {
            "timeout": (connect_timeout_s, read_timeout_s),
            "recv_window": recv_window_ms,
            "max_retries": 1,
            "retry_codes": set(_NO_RETRY_CODES),
            "retry_delay": 0,
            "force_retry": False,
            "return_response_headers": True,
        }
        self._ip_ban_default_s = ip_ban_default_s
        self._write_guard = write_guard
        self._session_factory = session_factory
        self._pools: dict[Lane, queue.SimpleQueue[HTTP]] = {lane: queue.SimpleQueue() for lane in Lane}
        self._all_sessions: list[HTTP] = []
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sessions, self._all_sessions = self._all_sessions, []
        for session in sessions:
            session.client.close()

    # --- sessions ------------------------------------------------------------

    def _take_session(self, lane: Lane) -> HTTP:
        try:
            return self._pools[lane].get_nowait()
        except queue.Empty:
            pass
        session = self._session_factory(self.urls, self._credentials, **self._session_kwargs)
        with self._lock:
            if self._closed:
                session.client.close()
                raise ExchangeError("the gateway is closed")
            self._all_sessions.append(session)
        return session

    def _return_session(self, lane: Lane, session: HTTP) -> None:
        if not self._closed:
            self._pools[lane].put(session)

    # --- one request ---------------------------------------------------------

    def call(self, endpoint: Endpoint, lane: Lane, params: Mapping[str, Any] | None = None, *, wait_s: float) -> Answer:
        """Send once. Returns the retCode-0 answer or raises an `infra.bybit.errors` type."""
        session = self._take_session(lane)
        try:
            if endpoint.writes:
                # The URL this very request would go to, not the one we were built with.
                self._write_guard(session.endpoint)
            if endpoint.private and self._credentials is None:
                raise Rejected(10003, "no API credentials configured", endpoint=endpoint.path)
            self.limiter.acquire(lane, endpoint.path, wait_s)
            started = time.monotonic()
            try:
                fn = getattr(session, endpoint.pybit_call)
                raw = fn(**dict(params or {})) if params else fn()
            except Exception as exc:  # noqa: BLE001 - every failure is mapped to our tree
                error = self._map_failure(exc, endpoint, lane)
                raise error from exc
            body, _elapsed, headers = raw
            answer = self._accept(endpoint, body, headers)
            log.debug(
                "gateway.request",
                endpoint=endpoint.path,
                lane=lane.name.lower(),
                duration_ms=round((time.monotonic() - started) * 1000, 2),
                limit_remaining=answer.headers.remaining,
            )
            return answer
        finally:
            self._return_session(lane, session)

    def _accept(self, endpoint: Endpoint, body: Any, headers: Mapping[str, str]) -> Answer:
        limits = LimitHeaders.parse(headers)
        if not isinstance(body, Mapping):
            raise MalformedResponse(f"answer is not a JSON object: {type(body).__name__}", endpoint=endpoint.path)
        time_ms = body.get("time")
        time_ms = time_ms if isinstance(time_ms, int) and time_ms > 0 else None
        reset_in = None
        if limits.reset_ms is not None:
            reset_in = min((limits.reset_ms - time.time() * 1000) / 1000, _MAX_SOFT_RESET_S)
        self.limiter.observe(endpoint.path, limits, reset_in_s=reset_in)
        ret_code = body.get("retCode", 0)
        if ret_code not in (0, None):
            # pybit raises for non-zero codes; a body like this means pybit let it
            # through (ignore_codes). Treat it as the rejection it is.
            raise Rejected(int(ret_code), str(body.get("retMsg", "")), endpoint=endpoint.path)
        result = body.get("result")
        if result is None:
            result = {}  # the DCP answer carries no result at all
        if not isinstance(result, Mapping):
            raise MalformedResponse(f"result is not an object: {type(result).__name__}", endpoint=endpoint.path)
        return Answer(result=result, time_ms=time_ms, headers=limits)

    # --- failure mapping -------------------------------------------------------

    def _map_failure(self, exc: Exception, endpoint: Endpoint, lane: Lane) -> ExchangeError:
        path = endpoint.path
        if isinstance(exc, InvalidRequestError):
            code, msg = int(exc.status_code), str(exc.message)
            if code in _RATE_LIMIT_RET_CODES:
                retry_after = self._retry_after(exc.resp_headers)
                self.limiter.rate_limited(path, retry_after)
                log.warning(
                    "gateway.rate_limited", endpoint=path, lane=lane.name.lower(), ret_code=code, retry_after_s=round(retry_after, 3)
                )
                return RateLimited(f"retCode {code}: {msg}", endpoint=path, retry_after_s=retry_after)
            self.limiter.observe(path, LimitHeaders.parse(exc.resp_headers))
            if code in _AMBIGUOUS_RET_CODES:
                log.warning("gateway.no_answer", endpoint=path, lane=lane.name.lower(), cause=f"retCode {code}: {msg}")
                return NoAnswer(f"retCode {code}: {msg}", endpoint=path)
            if code == _TIMESTAMP_RET_CODE:
                log.warning("gateway.clock_rejected", endpoint=path, ret_msg=msg)
                return TransientError(f"retCode {code}: {msg}", endpoint=path)
            return Rejected(code, msg, endpoint=path)
        if isinstance(exc, FailedRequestError):
            status = int(exc.status_code)
            if status == 403:
                pause = self._ban_duration(exc.resp_headers)
                until = self.limiter.ban(pause)
                log.error("gateway.ip_banned", endpoint=path, lane=lane.name.lower(), pause_s=round(pause, 1))
                return IpBanned(f"HTTP 403: {exc.message}", endpoint=path, until_monotonic=until)
            if status == 429:
                retry_after = self._retry_after(exc.resp_headers, default=1.0)
                self.limiter.rate_limited(path, retry_after)
                log.warning("gateway.rate_limited", endpoint=path, lane=lane.name.lower(), http_status=429, retry_after_s=retry_after)
                return RateLimited("HTTP 429: system frequency protection", endpoint=path, retry_after_s=retry_after)
            if status >= 500 or exc.resp_headers is None:
                # 5xx, or pybit's "could not decode JSON" (a 200 whose body was lost).
                log.warning("gateway.no_answer", endpoint=path, lane=lane.name.lower(), cause=f"HTTP {status}: {exc.message}")
                return NoAnswer(f"HTTP {status}: {exc.message}", endpoint=path)
            return Rejected(-status, f"HTTP {status}: {exc.message}", endpoint=path)
        if isinstance(exc, requests.exceptions.RequestException):
            if _never_sent(exc):
                return TransientError(f"not sent: {_describe(exc)}", endpoint=path)
            log.warning("gateway.no_answer", endpoint=path, lane=lane.name.lower(), cause=_describe(exc))
            return NoAnswer(_describe(exc), endpoint=path)
        if isinstance(exc, PermissionError):
            return Rejected(10003, str(exc), endpoint=path)
        # Anything else is a bug in the layers below; keep it typed but loud.
        log.error("gateway.unexpected_error", endpoint=path, error=repr(exc))
        return NoAnswer(f"unexpected {type(exc).__name__}: {exc}", endpoint=path)

    def _retry_after(self, headers: Mapping[str, str] | None, *, default: float = 1.0) -> float:
        limits = LimitHeaders.parse(headers)
        if limits.reset_ms is None:
            return default
        wait = (limits.reset_ms - time.time() * 1000) / 1000
        return min(max(wait, _MIN_RETRY_AFTER_S), _MAX_RETRY_AFTER_S)

    def _ban_duration(self, headers: Mapping[str, str] | None) -> float:
        if headers:
            retry_after = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
            if retry_after is not None:
                try:
                    return max(float(retry_after), 1.0)
                except ValueError:
                    pass
            limits = LimitHeaders.parse(headers)
            if limits.reset_ms is not None:
                wait = (limits.reset_ms - time.time() * 1000) / 1000
                if wait > 0:
                    return wait
        return self._ip_ban_default_s


def _never_sent(exc: requests.exceptions.RequestException) -> bool:
    """True only when the request certainly did not reach the venue."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = exc.args[0] if exc.args else None
        inner = getattr(reason, "reason", reason)
        # urllib3 NewConnectionError: the TCP connect itself failed (refused, unreachable).
        return type(inner).__name__ == "NewConnectionError" or "NewConnectionError" in repr(inner)
    return False


def _describe(exc: requests.exceptions.RequestException) -> str:
    """One short line for an operator, not urllib3's nested reprs."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect timed out"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "no answer within the read timeout"
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "Network is unreachable", "Connection reset by peer",
                   "Remote end closed connection", "Connection aborted", "timed out"):
        if marker in text:
            return f"{type(exc).__name__}: {marker}"
    return f"{type(exc).__name__}: {text[:160]}"
