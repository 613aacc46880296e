"""Account messages: wallet, position, order, execution.

Constructors accept both the REST shape (`/v5/position/list`, ...) and the
private WebSocket shape (`position`, `order`, ...); where the two name a
field differently (REST `avgPrice` vs WS `entryPrice` for a position) both
spellings are accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, Mapping

from pydantic import AliasChoices, Field, model_validator

from messages._parse import MalformedPayload, build, require
from messages.types import (
    Amount,
    Message,
    OptAmount,
    OptPrice,
    OptQty,
    OptSide,
    OptStr,
    OptUtcDatetime,
    Price,
    Qty,
    Side,
    Symbol,
    UtcDatetime,
)


def _ws_items(frame: Mapping[str, Any], topic: str) -> tuple[str, list[Any], Any]:
    what = f"{topic} frame"
    got = require(frame, "topic", what)
    if not isinstance(got, str) or got.split(".")[0] != topic:
        raise MalformedPayload(what, [f"topic: expected {topic} (got {got!r})"])
    items = require(frame, "data", what)
    if not isinstance(items, list):
        raise MalformedPayload(what, ["data: expected a list"])
    return what, items, require(frame, "creationTime", what)


class CoinBalance(Message):
    coin: str
    equity: OptAmount = None
    wallet_balance: OptAmount = Field(None, alias="walletBalance")
    usd_value: OptAmount = Field(None, alias="usdValue")
    unrealised_pnl: OptAmount = Field(None, alias="unrealisedPnl")
    cum_realised_pnl: OptAmount = Field(None, alias="cumRealisedPnl")
    locked: OptQty = None
    total_order_im: OptQty = Field(None, alias="totalOrderIM")
    total_position_im: OptQty = Field(None, alias="totalPositionIM")


class Wallet(Message):
    """The UNIFIED account: USD figures for the whole account plus each coin."""

    account_type: str = Field(alias="accountType")
    total_equity: Amount = Field(alias="totalEquity")
    total_wallet_balance: Amount = Field(alias="totalWalletBalance")
    total_available_balance: OptAmount = Field(None, alias="totalAvailableBalance")
    total_margin_balance: OptAmount = Field(None, alias="totalMarginBalance")
    total_perp_upl: OptAmount = Field(None, alias="totalPerpUPL")
    total_initial_margin: OptAmount = Field(None, alias="totalInitialMargin")
    total_maintenance_margin: OptAmount = Field(None, alias="totalMaintenanceMargin")
    coins: tuple[CoinBalance, ...] = Field((), alias="coin")
    ts: UtcDatetime

    def coin(self, name: str) -> CoinBalance | None:
        return next((c for c in self.coins if c.coin == name), None)

    @classmethod
    def from_bybit(cls, item: Mapping[str, Any], ts_ms: int) -> "Wallet":
        """From one `result.list` entry of wallet-balance, or one `wallet` WS item."""
        coins = item.get("coin", []) if isinstance(item, Mapping) else []
        if not isinstance(coins, list):
            raise MalformedPayload("wallet", ["coin: expected a list"])
        parsed = tuple(build(CoinBalance, "wallet coin", c) for c in coins)
        return build(cls, "wallet", item, coin=parsed, ts=ts_ms)

    @classmethod
    def from_ws(cls, frame: Mapping[str, Any]) -> list["Wallet"]:
        return _ws_all(cls, frame)


class Position(Message):
    """One one-way (positionIdx 0) or hedge-leg position. Flat: side None, size 0."""

    symbol: Symbol
    position_idx: int = Field(0, alias="positionIdx", ge=0, le=2)
    side: OptSide = None
    size: Qty
    # REST calls it avgPrice, the WS topic entryPrice; "0" while flat.
    entry_price: OptPrice = Field(None, validation_alias=AliasChoices("entry_price", "entryPrice", "avgPrice"))
    mark_price: OptPrice = Field(None, alias="markPrice")
    leverage: OptPrice = None
    position_value: OptQty = Field(None, alias="positionValue")
    liq_price: OptPrice = Field(None, alias="liqPrice")
    take_profit: OptPrice = Field(None, alias="takeProfit")
    stop_loss: OptPrice = Field(None, alias="stopLoss")
    unrealised_pnl: OptAmount = Field(None, alias="unrealisedPnl")
    cur_realised_pnl: OptAmount = Field(None, alias="curRealisedPnl")
    cum_realised_pnl: OptAmount = Field(None, alias="cumRealisedPnl")
    position_status: OptStr = Field(None, alias="positionStatus")
    seq: int | None = None
    updated_time: OptUtcDatetime = Field(None, alias="updatedTime")

    @model_validator(mode="after")
    def _open_has_side_and_price(self) -> "Position":
        if self.size > 0 and (self.side is None or self.entry_price is None):
            raise ValueError("an open position (size > 0) needs a side and an entry price")
        if self.size == 0 and self.side is not None:
            raise ValueError(f"a flat position (size 0) cannot have side {self.side.value}")
        return self

    @property
    def is_open(self) -> bool:
        return self.size > 0

    @property
    def signed_size(self):
        return self.size if self.side is Side.BUY else -self.size

    @classmethod
    def from_bybit(cls, item: Mapping[str, Any]) -> "Position":
        return build(cls, "position", item)

    @classmethod
    def from_ws(cls, frame: Mapping[str, Any]) -> list["Position"]:
        return _ws_all(cls, frame)


class OrderStatus(StrEnum):
    NEW = "New"
    PARTIALLY_FILLED = "PartiallyFilled"
    UNTRIGGERED = "Untriggered"
    REJECTED = "Rejected"
    PARTIALLY_FILLED_CANCELED = "PartiallyFilledCanceled"
    FILLED = "Filled"
    CANCELLED = "Cancelled"
    TRIGGERED = "Triggered"
    DEACTIVATED = "Deactivated"

    @property
    def is_open(self) -> bool:
        return self in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED, OrderStatus.UNTRIGGERED)


def _no_stop_type(value: Any) -> Any:
    return None if value in ("", "UNKNOWN") else value


class Order(Message):
    """An order as the venue reports it. `avg_price` None means "no fill price known"."""

    order_id: str = Field(alias="orderId", min_length=1)
    order_link_id: OptStr = Field(None, alias="orderLinkId")
    symbol: Symbol
    side: Side
    order_type: str = Field(alias="orderType")
    order_status: OrderStatus = Field(alias="orderStatus")
    price: OptPrice = None
    qty: Qty
    # Bybit sends "" or "0" while nothing is filled (DATA-021): never a price of 0.
    avg_price: OptPrice = Field(None, alias="avgPrice")
    cum_exec_qty: OptQty = Field(None, alias="cumExecQty")
    cum_exec_value: OptQty = Field(None, alias="cumExecValue")
    leaves_qty: OptQty = Field(None, alias="leavesQty")
    reduce_only: bool = Field(False, alias="reduceOnly")
    close_on_trigger: bool = Field(False, alias="closeOnTrigger")
    stop_order_type: OptStr = Field(None, alias="stopOrderType")
    trigger_price: OptPrice = Field(None, alias="triggerPrice")
    take_profit: OptPrice = Field(None, alias="takeProfit")
    stop_loss: OptPrice = Field(None, alias="stopLoss")
    time_in_force: OptStr = Field(None, alias="timeInForce")
    position_idx: int = Field(0, alias="positionIdx", ge=0, le=2)
    cancel_type: OptStr = Field(None, alias="cancelType")
    reject_reason: OptStr = Field(None, alias="rejectReason")
    closed_pnl: OptAmount = Field(None, alias="closedPnl")
    created_time: UtcDatetime = Field(alias="createdTime")
    updated_time: OptUtcDatetime = Field(None, alias="updatedTime")

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if isinstance(data, dict) and "stopOrderType" in data:
            data = {**data, "stopOrderType": _no_stop_type(data["stopOrderType"])}
        return data

    @property
    def is_conditional(self) -> bool:
        return self.stop_order_type is not None or self.order_status is OrderStatus.UNTRIGGERED

    @classmethod
    def from_bybit(cls, item: Mapping[str, Any]) -> "Order":
        return build(cls, "order", item)

    @classmethod
    def from_ws(cls, frame: Mapping[str, Any]) -> list["Order"]:
        return _ws_all(cls, frame)


# What Bybit books as an execution without it being a fill of one of our orders:
# funding payments, auto-deleveraging and liquidation takeovers, settlement and
# delivery. They move the wallet and the position, but an order waiting for its
# fill must never see one of them as that fill.
NON_TRADE_EXEC_TYPES = frozenset({"Funding", "AdlTrade", "BustTrade", "Settle", "Delivery"})


class Execution(Message):
    """A fill of an order (exec_type "Trade") or an account event booked as an execution
    (Funding, AdlTrade, BustTrade, Settle, Delivery): kept, but never counted as a fill."""

    exec_id: str = Field(alias="execId", min_length=1)
    order_id: OptStr = Field(None, alias="orderId")
    order_link_id: OptStr = Field(None, alias="orderLinkId")
    symbol: Symbol
    side: OptSide = None
    exec_type: str = Field(alias="execType", min_length=1)
    order_type: OptStr = Field(None, alias="orderType")
    exec_price: Price = Field(alias="execPrice")
    exec_qty: Qty = Field(alias="execQty")
    exec_value: OptQty = Field(None, alias="execValue")
    exec_fee: Amount = Field(alias="execFee")
    fee_rate: OptAmount = Field(None, alias="feeRate")
    # Only the WS topic carries execPnl.
    exec_pnl: OptAmount = Field(None, alias="execPnl")
    closed_size: OptQty = Field(None, alias="closedSize")
    leaves_qty: OptQty = Field(None, alias="leavesQty")
    is_maker: bool = Field(False, alias="isMaker")
    exec_time: UtcDatetime = Field(alias="execTime")
    seq: int | None = None

    @property
    def is_trade(self) -> bool:
        """A fill of one of our orders. Unknown newer types are not assumed to be fills."""
        return self.exec_type == "Trade"

    @classmethod
    def from_bybit(cls, item: Mapping[str, Any]) -> "Execution":
        return build(cls, "execution", item)

    @classmethod
    def from_ws(cls, frame: Mapping[str, Any]) -> list["Execution"]:
        return _ws_all(cls, frame)


def ws_each(kind: type, frame: Mapping[str, Any]) -> tuple[list[Any], list[MalformedPayload]]:
    """A private frame's items one by one: the messages of those that parse, and the refusal of
    each that does not. Private frames batch unrelated items (two orders, fills of different
    orders), and their topics are reseeded only on a reconnect: one bad item must not take its
    neighbours down with it. A frame that is not a private frame of `kind` raises."""
    topic = _WS_TOPICS[kind]
    what, items, created = _ws_items(frame, topic)
    good: list[Any] = []
    bad: list[MalformedPayload] = []
    for item in items:
        try:
            good.append(kind.from_bybit(item, created) if kind is Wallet else build(kind, what, item))
        except MalformedPayload as exc:
            bad.append(exc)
    return good, bad


def _ws_all(kind: type, frame: Mapping[str, Any]) -> list[Any]:
    """Every item of the frame, or the first item's refusal (`from_ws`: all or nothing)."""
    good, bad = ws_each(kind, frame)
    if bad:
        raise bad[0]
    return good


_WS_TOPICS: dict[type, str] = {Order: "order", Execution: "execution", Position: "position", Wallet: "wallet"}


class AccountReseed(Message):
    """The account as REST saw it right after the private socket was (re)subscribed.

    Told by WsPrivate to the StateStore to heal the seam of a (re)connect:
    what changed while the socket was down (a fill, a cancel, a funding
    payment) is in here. `positions` holds one strict row per symbol checked,
    flat ones included, so a position closed during the outage is seen as
    flat. `requested_at` is when the first REST read was sent: a streamed
    update newer than that wins over this answer.
    """

    wallet: Wallet
    positions: tuple[Position, ...]
    open_orders: tuple[Order, ...]
    executions: tuple[Execution, ...]
    symbols_checked: tuple[str, ...]
    requested_at: UtcDatetime
    generation: int = 0  # of the WsPrivate that read it: an older generation's reseed is ignored


class PrivatePulse(Message):
    """The private socket answered (a pong to pybit's ping, an ack): it is alive though the
    account is quiet. Bybit's private topics push only when something happens, so this is
    what tells a quiet socket from a dead one."""

    generation: int = 0


@dataclass(frozen=True, slots=True)
class PositionPnl:
    """Unrealised PnL of one position, each figure named for what it is measured against (DATA-020).

    `margin_usdt` is the entry notional divided by leverage (the margin the
    position ties up), so `pct_of_margin` is what the trader's stake moved;
    `pct_of_notional` is the price move. None where an input is unknown.
    """

    symbol: str
    size: Decimal
    side: str | None
    entry_price: Decimal | None
    mark_price: Decimal | None
    leverage: Decimal | None
    notional_usdt: Decimal | None
    margin_usdt: Decimal | None
    unrealised_pnl_usdt: Decimal | None
    pct_of_margin: Decimal | None
    pct_of_notional: Decimal | None

    @classmethod
    def of(cls, position: Position, mark: Decimal | None = None) -> "PositionPnl":
        """From a position and the freshest mark price known (the position's own if None)."""
        mark = mark if mark is not None else position.mark_price
        entry, size, lev = position.entry_price, position.size, position.leverage
        notional = size * entry if entry is not None and size > 0 else None
        margin = notional / lev if notional is not None and lev else None
        pnl: Decimal | None
        if size == 0:
            pnl = Decimal(0)
        elif entry is not None and mark is not None:
            pnl = (mark - entry) * position.signed_size
        else:
            pnl = position.unrealised_pnl
        hundred = Decimal(100)
        return cls(
            symbol=position.symbol,
            size=size,
            side=str(position.side) if position.side is not None else None,
            entry_price=entry,
            mark_price=mark,
            leverage=lev,
            notional_usdt=notional,
            margin_usdt=margin,
            unrealised_pnl_usdt=pnl,
            pct_of_margin=pnl / margin * hundred if pnl is not None and margin else None,
            pct_of_notional=pnl / notional * hundred if pnl is not None and notional else None,
        )


__all__ = [
    "AccountReseed",
    "ws_each",
    "NON_TRADE_EXEC_TYPES",
    "PositionPnl",
    "PrivatePulse",
    "CoinBalance",
    "Execution",
    "Order",
    "OrderStatus",
    "Position",
    "Wallet",
]
