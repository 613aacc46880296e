"""Market data messages: tickers, kline updates and closed bars."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from messages._parse import MalformedPayload, build, build_fast, build_known, require
from messages.types import (
    Interval,
    Message,
    OptAmount,
    OptPrice,
    OptQty,
    OptUtcDatetime,
    Price,
    Qty,
    Symbol,
    UtcDatetime,
    is_aligned,
    ms_to_utc,
    next_open_ms,
    utc_to_ms,
)


class Ticker(Message):
    """A ticker snapshot (all prices known) or a delta (only changed fields set).

    Bybit pushes a snapshot after (re)subscribe, then deltas; `merge` folds a
    delta into a snapshot. A funding rate of exactly 0 is a value, not "absent".
    """

    symbol: Symbol
    is_snapshot: bool
    last_price: OptPrice = Field(None, alias="lastPrice")
    mark_price: OptPrice = Field(None, alias="markPrice")
    index_price: OptPrice = Field(None, alias="indexPrice")
    bid1_price: OptPrice = Field(None, alias="bid1Price")
    bid1_size: OptQty = Field(None, alias="bid1Size")
    ask1_price: OptPrice = Field(None, alias="ask1Price")
    ask1_size: OptQty = Field(None, alias="ask1Size")
    funding_rate: OptAmount = Field(None, alias="fundingRate")
    next_funding_time: OptUtcDatetime = Field(None, alias="nextFundingTime")
    price_24h_pcnt: OptAmount = Field(None, alias="price24hPcnt")
    high_price_24h: OptPrice = Field(None, alias="highPrice24h")
    low_price_24h: OptPrice = Field(None, alias="lowPrice24h")
    volume_24h: OptQty = Field(None, alias="volume24h")
    turnover_24h: OptQty = Field(None, alias="turnover24h")
    open_interest: OptQty = Field(None, alias="openInterest")
    seq: int | None = None
    ts: UtcDatetime

    @model_validator(mode="after")
    def _snapshot_is_complete(self) -> "Ticker":
        if self.is_snapshot:
            missing = [n for n in ("last_price", "mark_price", "index_price") if getattr(self, n) is None]
            if missing:
                raise ValueError(f"ticker snapshot without {', '.join(missing)}")
        return self

    @classmethod
    def from_bybit(cls, frame: Mapping[str, Any]) -> "Ticker":
        """From a `tickers.{symbol}` WebSocket frame (snapshot or delta)."""
        if type(frame) is dict and type(data := frame.get("data")) is dict and "ts" in frame:
            # The hot path (thousands a second): a JSON object as pybit decoded it; same checks, no
            # generic Mapping tests (slow through typing's isinstance), one call into validation.
            kind = frame.get("type")
            if (kind == "delta" or kind == "snapshot") and frame.get("topic") == f"tickers.{data.get('symbol')}":
                return build_fast(cls, lambda: f"ticker frame {frame.get('topic', '?')}", data,
                                  {"is_snapshot": kind == "snapshot", "ts": frame["ts"], "seq": frame.get("cs")})
        what = f"ticker frame {frame.get('topic', '?') if isinstance(frame, Mapping) else '?'}"
        kind = require(frame, "type", what)
        if kind not in ("snapshot", "delta"):
            raise MalformedPayload(what, [f"type: expected 'snapshot' or 'delta' (got {kind!r})"])
        data = require(frame, "data", what)
        topic = require(frame, "topic", what)
        if not isinstance(data, Mapping) or topic != f"tickers.{data.get('symbol')}":  # another stream's frame
            raise MalformedPayload(what, [f"topic: expected tickers.<data.symbol> (got {topic!r})"])
        return build(cls, what, data, is_snapshot=kind == "snapshot", ts=require(frame, "ts", what), seq=frame.get("cs"))

    @classmethod
    def from_rest(cls, item: Mapping[str, Any], server_time_ms: int) -> "Ticker":
        """From one `result.list` entry of GET /v5/market/tickers."""
        return build(cls, "ticker row", item, is_snapshot=True, ts=server_time_ms)

    def merge(self, delta: "Ticker") -> "Ticker":
        """This snapshot with every field the delta carries replaced."""
        if delta.symbol != self.symbol:
            raise ValueError(f"cannot merge a {delta.symbol} delta into a {self.symbol} ticker")
        if delta.is_snapshot:
            return delta
        return self.model_copy(update=delta.changes())

    def changes(self) -> dict[str, Any]:
        """The fields this delta carries, by field name: what a merge replaces.

        Only the fields the venue sent (a delta sets a handful of twenty): no walk over all.
        """
        return {k: v for k in self.model_fields_set if k != "is_snapshot" and (v := getattr(self, k)) is not None}


def _validate(model: type[Any], frame: dict[str, Any], payload: dict[str, Any], **extra: Any) -> Any:
    """`build` for a payload already known to be a dict: the same filtering, validation and errors."""
    return build_known(model, lambda: f"{model.__name__.lower()} frame {frame.get('topic', '?')}", payload, **extra)


class BarSource(StrEnum):
    WS = "ws"
    REST = "rest"


class _Ohlcv(Message):
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Qty
    turnover: Qty

    @model_validator(mode="after")
    def _ohlc_consistent(self) -> "_Ohlcv":
        if self.high < max(self.open, self.close, self.low) or self.low > min(self.open, self.close):
            raise ValueError(
                f"inconsistent bar: open {self.open} high {self.high} low {self.low} close {self.close}"
            )
        return self


class Kline(_Ohlcv):
    """One update of a running (confirm=False) or just-closed (confirm=True) bar."""

    symbol: Symbol
    interval: Interval
    start: UtcDatetime
    end: UtcDatetime
    confirm: bool
    ts: UtcDatetime = Field(alias="timestamp")
    # The closed bar of a confirm=true update, built once on first use and shared by every
    # reader (router, StateStore): its fields are this kline's, already validated.
    _bar: "ClosedBar | None" = PrivateAttr(None)

    @model_validator(mode="after")
    def _aligned(self) -> "Kline":
        start_ms = utc_to_ms(self.start)
        if not is_aligned(self.interval, start_ms):
            raise ValueError(f"start {self.start.isoformat()} is not on a {self.interval} bar boundary")
        if utc_to_ms(self.end) != next_open_ms(self.interval, start_ms) - 1:
            raise ValueError("end must be the last millisecond of the bar")
        return self

    @classmethod
    def from_bybit(cls, frame: Mapping[str, Any]) -> list["Kline"]:
        """From a `kline.{interval}.{symbol}` WebSocket frame (data is a list)."""
        topic = require(frame, "topic", "kline frame")
        what = f"kline frame {topic}"
        parts = str(topic).split(".")
        if len(parts) != 3 or parts[0] != "kline":
            raise MalformedPayload(what, [f"topic: expected kline.<interval>.<symbol> (got {topic!r})"])
        _, interval, symbol = parts
        items = require(frame, "data", what)
        if not isinstance(items, list) or not items:
            raise MalformedPayload(what, ["data: expected a non-empty list"])
        out = []
        for item in items:
            if type(item) is dict:
                kline = _validate(cls, frame, item, symbol=symbol)
            else:
                kline = build(cls, what, item, symbol=symbol)
            if kline.interval != interval:
                raise MalformedPayload(what, [f"interval: {kline.interval!r} does not match the topic"])
            out.append(kline)
        return out

    def __eq__(self, other: object) -> bool:
        # The cached closed bar is a derived value, not part of what a kline is.
        if not isinstance(other, Kline):
            return NotImplemented
        return self.__dict__ == other.__dict__


    def closed_bar(self) -> "ClosedBar":
        if not self.confirm:
            raise ValueError("a running bar (confirm=false) is not a closed bar")
        bar = self._bar
        if bar is None:
            # No second validation: every ClosedBar rule (positive prices, consistent OHLC,
            # aligned open) is a Kline rule that this kline passed.
            bar = self._bar = ClosedBar.model_construct(
                symbol=self.symbol,
                interval=self.interval,
                open_time=self.start,
                open=self.open,
                high=self.high,
                low=self.low,
                close=self.close,
                volume=self.volume,
                turnover=self.turnover,
                source=BarSource.WS,
            )
        return bar


class ClosedBar(_Ohlcv):
    """A finished OHLCV bar, as stored. Keyed by (symbol, interval, open_time)."""

    symbol: Symbol
    interval: Interval
    open_time: UtcDatetime
    source: BarSource

    @model_validator(mode="after")
    def _aligned(self) -> "ClosedBar":
        if not is_aligned(self.interval, utc_to_ms(self.open_time)):
            raise ValueError(f"open_time {self.open_time.isoformat()} is not on a {self.interval} bar boundary")
        return self

    @property
    def open_ms(self) -> int:
        return utc_to_ms(self.open_time)

    @property
    def close_time(self) -> datetime:
        return ms_to_utc(next_open_ms(self.interval, self.open_ms))

    @classmethod
    def from_rest_row(cls, symbol: str, interval: str, row: Sequence[Any]) -> "ClosedBar":
        """From one GET /v5/market/kline row: [start, open, high, low, close, volume, turnover]."""
        what = f"kline row {symbol} {interval}"
        if not isinstance(row, (list, tuple)) or len(row) != 7:
            raise MalformedPayload(what, [f"<row>: expected 7 values, got {row!r}"])
        start, o, h, l, c, v, t = row
        return build(
            cls,
            what,
            {},
            symbol=symbol,
            interval=interval,
            open_time=start,
            open=o,
            high=h,
            low=l,
            close=c,
            volume=v,
            turnover=t,
            source=BarSource.REST,
        )


@runtime_checkable
class PendingMarketData(Protocol):
    """Where `MarketDataPending` says the messages are (actors.inbox.Inbox)."""

    def take(self) -> tuple[Any, ...]: ...


class MarketDataPending(Message):
    """Market messages (Ticker, Kline) wait in `inbox`, oldest first: `take()` them all.

    The socket side tells one of these only when none is outstanding, so a
    flood of frames wakes the StateStore once per batch instead of once per
    frame (actors/inbox.py). The items are the usual immutable messages.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    inbox: PendingMarketData
