"""How every gateway call reaches the venue: on a lane, once, with bounded retries, or over cursor pages.

One `Sender` per gateway view. The transport, the exchange settings, the
write guard and the entry gate are shared by every view; only the forced lane differs,
so Panic's view (`on_lane(Lane.PANIC)`) sends its lookups on the panic
lane too.

Retries: reads and idempotent writes retry `TransientError` with bounded,
jittered exponential backoff that honours the venue's reset time. A ban
(`IpBanned`) or a rejection is never retried: repeating cannot help.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from infra.bybit.entry_gate import EntryGate
from infra.bybit.errors import MalformedResponse, RateLimited, TransientError
from infra.bybit.rate_limit import Lane
from infra.bybit.transport import Answer, Endpoint, Transport
from infra.bybit.venue_guard import WriteGuard
from infra.config import ExchangeConfig
from infra.logging import get_logger
from messages._parse import MalformedPayload

log = get_logger("gateway")

T = TypeVar("T")

_PAGE_LIMIT_GUARD = 200  # pages per listing: a runaway cursor must not loop forever


class Sender:
    """Sends the gateway's requests for one lane view; thread-safe."""

    def __init__(self, transport: Transport, exchange: ExchangeConfig, guard: WriteGuard, forced_lane: Lane | None = None,
                 entries: EntryGate | None = None):
        self.transport = transport
        self.exchange = exchange
        self.guard = guard
        self.entries = entries if entries is not None else EntryGate()
        self._forced_lane = forced_lane

    def on_lane(self, lane: Lane) -> "Sender":
        """A sender sharing everything with this one, on which every call uses `lane`."""
        return Sender(self.transport, self.exchange, self.guard, forced_lane=lane, entries=self.entries)

    def lane(self, default: Lane) -> Lane:
        return self._forced_lane if self._forced_lane is not None else default

    def trading_problems(self) -> list[str]:
        return self.guard.problems(self.transport.urls.rest)

    def check_writable(self) -> None:
        """Refuse an account-changing call before any request, reads included, leaves.

        The transport checks again on the URL each write is actually sent to.
        """
        self.guard(self.transport.urls.rest)

    # --- sending -------------------------------------------------------------------

    def once(self, endpoint: Endpoint, lane: Lane, params: Mapping[str, Any] | None = None) -> Answer:
        return self.transport.call(endpoint, lane, params, wait_s=float(self.exchange.lane_wait_s))

    def retried(self, endpoint: Endpoint, lane: Lane, params: Mapping[str, Any] | None = None, *, call: str | None = None) -> Answer:
        """One request with bounded retries; `call` names it in `gateway.retry` (default: the path)."""
        return self.retrying(call or endpoint.path, lane, lambda: self.once(endpoint, lane, params))

    def retrying(self, call: str, lane: Lane, fn: Callable[[], T]) -> T:
        """Run `fn` with bounded retries on TransientError (never on a ban or a rejection)."""
        cfg = self.exchange
        backoff = wait_exponential_jitter(multiplier=0.2, max=float(cfg.retry_max_wait_s), jitter=0.2)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            hinted = getattr(exc, "retry_after_s", None) or 0.0
            if lane is Lane.PANIC and isinstance(exc, RateLimited) and hinted:
                # A panic waits exactly as long as the venue said its budget is spent, not a
                # backoff on top: every other lane keeps the conservative exponential wait.
                return min(hinted, float(cfg.retry_max_wait_s) * 2) + random.uniform(0, 0.02)
            return max(backoff(state), min(hinted, float(cfg.retry_max_wait_s) * 2))

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "gateway.retry",
                call=call,
                lane=lane.name.lower(),
                attempt=state.attempt_number,
                of=cfg.read_attempts,
                error=f"{type(exc).__name__}: {exc}",
                wait_s=round(state.upcoming_sleep, 3),
            )

        retrying = Retrying(
            stop=stop_after_attempt(cfg.read_attempts),
            wait=wait,
            retry=retry_if_exception_type(TransientError),
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(fn)

    def pages(self, endpoint: Endpoint, lane: Lane, params: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
        """Every `result.list` item over cursor pages, each page with its own retries."""
        cursor: str | None = None
        for _ in range(_PAGE_LIMIT_GUARD):
            page_params = dict(params)
            if cursor:
                page_params["cursor"] = cursor
            answer = self.retried(endpoint, lane, page_params)
            items = answer.result.get("list")
            if not isinstance(items, list):
                raise MalformedResponse("result.list missing or not a list", endpoint=endpoint.path)
            yield from items
            cursor = answer.result.get("nextPageCursor") or None
            if not cursor or not items:
                return
        raise MalformedResponse(f"more than {_PAGE_LIMIT_GUARD} pages; cursor does not end", endpoint=endpoint.path)


@contextmanager
def parsing(endpoint: Endpoint) -> Iterator[None]:
    """An answer that does not parse into our messages is the venue's malformed answer, not our bug."""
    try:
        yield
    except MalformedPayload as exc:
        raise MalformedResponse(str(exc), endpoint=endpoint.path) from None
