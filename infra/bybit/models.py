"""Typed requests and results of the gateway (the account messages live in `messages`)."""

from __future__ import annotations

import hashlib
import re
import uuid
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal, Mapping

from pydantic import Field, field_validator, model_validator

from messages._parse import build
from messages.account import Order
from messages.types import Amount, Message, OptPrice, OptStr, Qty, Side, Symbol, UtcDatetime

# Bybit: at most 36 characters of [A-Za-z0-9_-], unique per account.
_LINK_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,36}$")


def order_link_id(*key: object, prefix: str = "n") -> str:
    """A deterministic orderLinkId for an intent: the same key gives the same id.

    Use the decision's identity (signal id, symbol, leg), so a retry after a
    crash or an unknown outcome re-sends the same id and the venue refuses a
    second order (110072) instead of placing one.
    """
    digest = hashlib.sha256("\x1f".join(str(k) for k in key).encode()).hexdigest()
    link = f"{prefix}-{digest}"[:36]
    if not _LINK_ID_RE.match(link):
        raise ValueError(f"prefix {prefix!r} makes an invalid orderLinkId")
    return link


def new_order_link_id(prefix: str = "n") -> str:
    """A fresh random orderLinkId, for orders with no natural identity (tests, manual use)."""
    return order_link_id(uuid.uuid4().hex, prefix=prefix)


class OrderType(StrEnum):
    MARKET = "Market"
    LIMIT = "Limit"


class OrderRequest(Message):
    """One order as the caller means it; the gateway rounds it to the instrument.

    A market order that may open a position needs `reference_price` (the
    price the caller checked, e.g. from the StateStore ticker) so the
    minimum-notional rule is enforced before sending, not by the venue.
    """

    symbol: Symbol
    side: Side
    order_type: OrderType
    qty: Decimal = Field(gt=0, allow_inf_nan=False)
    order_link_id: str
    price: Decimal | None = Field(None, gt=0, allow_inf_nan=False)
    reference_price: Decimal | None = Field(None, gt=0, allow_inf_nan=False)
    reduce_only: bool = False
    close_on_trigger: bool = False
    time_in_force: Literal["GTC", "IOC", "FOK", "PostOnly"] | None = None
    take_profit: Decimal | None = Field(None, gt=0, allow_inf_nan=False)
    stop_loss: Decimal | None = Field(None, gt=0, allow_inf_nan=False)
    tp_trigger_by: Literal["LastPrice", "MarkPrice", "IndexPrice"] | None = None
    sl_trigger_by: Literal["LastPrice", "MarkPrice", "IndexPrice"] | None = None

    @field_validator("order_link_id")
    @classmethod
    def _link_id_shape(cls, v: str) -> str:
        if not _LINK_ID_RE.match(v):
            raise ValueError("orderLinkId must be 1-36 characters of [A-Za-z0-9_-]")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "OrderRequest":
        if self.order_type is OrderType.LIMIT and self.price is None:
            raise ValueError("a limit order needs a price")
        if self.order_type is OrderType.MARKET and self.price is not None:
            raise ValueError("a market order takes no price (use reference_price)")
        if self.order_type is OrderType.MARKET and not self.reduce_only and self.reference_price is None:
            raise ValueError("a market order that can open a position needs reference_price for the notional check")
        if self.reduce_only and (self.take_profit is not None or self.stop_loss is not None):
            raise ValueError("Bybit takes no take-profit/stop-loss on a reduce-only order")
        return self

    @property
    def notional_price(self) -> Decimal | None:
        return self.price if self.price is not None else self.reference_price


class Resolution(StrEnum):
    """How the gateway learned an order exists."""

    ACKNOWLEDGED = "acknowledged"  # the create answered retCode 0
    LOOKED_UP = "looked_up"  # the create's answer was lost; found by orderLinkId
    DUPLICATE = "duplicate"  # 110072: an order with this orderLinkId already existed


class OrderAck(Message):
    """The venue has the order. Its fills arrive on the private stream (or get_order)."""

    symbol: Symbol
    order_id: str = Field(min_length=1)
    order_link_id: str
    resolution: Resolution
    # The venue's view when the order was found by lookup; None after a plain ack.
    order: Order | None = None
    # What was sent, after rounding; for an order found by lookup, the venue's own figures.
    qty: Qty
    price: OptPrice = None
    reduce_only: bool = False


class CancelAck(Message):
    symbol: Symbol
    order_id: str = Field(min_length=1)
    order_link_id: OptStr = None


class AmendAck(Message):
    """The venue took the amendment. `order_id` is None when it answered without one and
    the caller named the order by orderLinkId only: an id is never made up."""

    symbol: Symbol
    order_id: OptStr = None
    order_link_id: OptStr = None


class ClosedPnl(Message):
    """One closed-PnL record (a position reduced or closed), from /v5/position/closed-pnl."""

    symbol: Symbol
    order_id: str = Field(alias="orderId", min_length=1)
    side: Side
    qty: Qty
    closed_size: Qty = Field(alias="closedSize")
    closed_pnl: Amount = Field(alias="closedPnl")
    avg_entry_price: OptPrice = Field(None, alias="avgEntryPrice")
    avg_exit_price: OptPrice = Field(None, alias="avgExitPrice")
    exec_type: OptStr = Field(None, alias="execType")
    leverage: OptPrice = None
    created_time: UtcDatetime = Field(alias="createdTime")
    updated_time: UtcDatetime = Field(alias="updatedTime")

    @classmethod
    def from_bybit(cls, item: Mapping[str, Any]) -> "ClosedPnl":
        return build(cls, "closed pnl", item)


class DcpInfo(Message):
    """Disconnect-cancel-all for derivatives: whether the account has it, and its window."""

    available: bool
    enabled: bool = False
    window_s: int | None = None


class ApiKeyInfo(Message):
    """What /v5/user/query-api says about the key in use."""

    read_only: bool
    permissions: dict[str, tuple[str, ...]]
    ips: tuple[str, ...] = ()
    expires_at: OptStr = None
    uta: int | None = None

    @property
    def can_withdraw(self) -> bool:
        return any("withdraw" in p.lower() for perms in self.permissions.values() for p in perms)

    @property
    def can_trade_contracts(self) -> bool:
        granted = set(self.permissions.get("ContractTrade", ()))
        return {"Order", "Position"} <= granted

    @property
    def ip_bound(self) -> bool:
        return bool(self.ips) and "*" not in self.ips

    @classmethod
    def from_bybit(cls, result: Mapping[str, Any]) -> "ApiKeyInfo":
        perms = result.get("permissions") or {}
        ips = result.get("ips") or []
        if isinstance(ips, str):
            ips = [p for p in ips.split(",") if p]
        return build(
            cls,
            "api key info",
            {},
            read_only=bool(int(result.get("readOnly", 1))),
            permissions={str(k): tuple(str(p) for p in (v or ())) for k, v in perms.items()},
            ips=tuple(str(i) for i in ips),
            expires_at=result.get("expiredAt") or None,
            uta=result.get("uta"),
        )


class ServerTime(Message):
    """The venue's clock and how far ours is from it (positive: the venue is ahead)."""

    server_ms: int
    skew_ms: int
    round_trip_ms: int


__all__ = [
    "AmendAck",
    "ApiKeyInfo",
    "CancelAck",
    "ClosedPnl",
    "DcpInfo",
    "OrderAck",
    "OrderRequest",
    "OrderType",
    "Resolution",
    "ServerTime",
    "new_order_link_id",
    "order_link_id",
]
