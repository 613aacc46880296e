"""Account reads: positions, open orders, wallet, executions, closed PnL, the API key."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator, Mapping, TypeVar

from infra.bybit.errors import ExchangeError, MalformedResponse
from infra.bybit.models import ApiKeyInfo, ClosedPnl
from infra.bybit.product import CATEGORY, SETTLE_COIN
from infra.bybit.rate_limit import Lane
from infra.bybit.sender import Sender, parsing
from infra.bybit.transport import Endpoint, Endpoints
from messages._parse import MalformedPayload
from messages.account import Execution, Order, Position, Wallet

T = TypeVar("T")

_SEVEN_DAYS_MS = 7 * 24 * 3600 * 1000


class AccountReads:
    """`Gateway`'s account reads, each on the query lane with bounded retries."""

    _sender: Sender

    def get_position_rows(self, symbol: str) -> list[Position]:
        """Every position row of `symbol` (one in one-way mode, two in hedge mode).

        Bybit answers a symbol query with the row even when flat, so an empty
        list is not "flat" but a broken answer (DATA-019): MalformedResponse.
        """
        lane = self._sender.lane(Lane.QUERY)

        def fetch() -> list[Position]:
            answer = self._sender.once(Endpoints.POSITIONS, lane, {"category": CATEGORY, "symbol": symbol})
            items = answer.result.get("list") or []
            rows = [i for i in items if isinstance(i, Mapping) and i.get("symbol") == symbol]
            if not rows:
                raise MalformedResponse(
                    f"no position row for {symbol}: a symbol query always returns one, so this is not 'flat'",
                    endpoint=Endpoints.POSITIONS.path,
                )
            with parsing(Endpoints.POSITIONS):
                return [Position.from_bybit(r) for r in rows]

        return self._sender.retrying("get_position", lane, fetch)

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
        items = self._sender.pages(Endpoints.POSITIONS, self._sender.lane(Lane.QUERY), {"category": CATEGORY, "settleCoin": SETTLE_COIN, "limit": 200})
        with parsing(Endpoints.POSITIONS):
            return [p for p in (Position.from_bybit(i) for i in items) if p.is_open]

    def get_open_orders(self, symbol: str | None = None, *, order_filter: str | None = None) -> list[Order]:
        """Open orders (conditional ones included unless filtered), of `symbol` or of every USDT contract."""
        params: dict[str, Any] = {"category": CATEGORY, "openOnly": 0, "limit": 50}
        params.update({"symbol": symbol} if symbol else {"settleCoin": SETTLE_COIN})
        if order_filter:
            params["orderFilter"] = order_filter
        items = self._sender.pages(Endpoints.OPEN_ORDERS, self._sender.lane(Lane.QUERY), params)
        with parsing(Endpoints.OPEN_ORDERS):
            return [Order.from_bybit(i) for i in items]

    def get_wallet(self) -> Wallet:
        answer = self._sender.retried(Endpoints.WALLET, self._sender.lane(Lane.QUERY), {"accountType": "UNIFIED"})
        items = answer.result.get("list") or []
        if not items:
            raise MalformedResponse("wallet-balance without an account", endpoint=Endpoints.WALLET.path)
        with parsing(Endpoints.WALLET):
            return Wallet.from_bybit(items[0], answer.time_ms or int(time.time() * 1000))

    def get_executions(
        self,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        symbol: str | None = None,
        exec_type: str | None = None,
    ) -> list[Execution]:
        """Executions (fills, funding), newest first per 7-day chunk; longer ranges are split."""
        return self._by_week(Endpoints.EXECUTIONS, Execution.from_bybit, start_ms, end_ms, symbol=symbol, execType=exec_type)

    def get_closed_pnl(self, *, start_ms: int | None = None, end_ms: int | None = None, symbol: str | None = None) -> list[ClosedPnl]:
        return self._by_week(Endpoints.CLOSED_PNL, ClosedPnl.from_bybit, start_ms, end_ms, symbol=symbol)

    def get_api_key_info(self) -> ApiKeyInfo:
        answer = self._sender.retried(Endpoints.API_KEY, self._sender.lane(Lane.QUERY))
        try:
            return ApiKeyInfo.from_bybit(answer.result)
        except (MalformedPayload, ValueError, TypeError) as exc:
            raise MalformedResponse(f"api key info: {exc}", endpoint=Endpoints.API_KEY.path) from None

    def _by_week(
        self,
        endpoint: Endpoint,
        parse: Callable[[Mapping[str, Any]], T],
        start_ms: int | None,
        end_ms: int | None,
        **filters: str | None,
    ) -> list[T]:
        """Every item of a time-ranged listing, one paged query per 7-day chunk; unset filters are left out."""
        base = {"category": CATEGORY, "limit": 100, **{name: value for name, value in filters.items() if value}}
        out: list[T] = []
        for chunk in _seven_day_chunks(start_ms, end_ms):
            with parsing(endpoint):
                out += [parse(i) for i in self._sender.pages(endpoint, self._sender.lane(Lane.QUERY), {**base, **chunk})]
        return out


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
