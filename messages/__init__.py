"""The typed, immutable messages actors send each other, and nothing else."""

from messages._parse import MalformedPayload
from messages.account import CoinBalance, Execution, Order, OrderStatus, Position, Wallet
from messages.commands import ClosePosition, Direction, Flush, Panic, Signal, Subscribe, Unsubscribe
from messages.control import ChildFailed, Heartbeat, Ping, StreamStale, TradingState, TradingStateChanged
from messages.market import BarSource, ClosedBar, Kline, Ticker
from messages.types import Side

__all__ = [
    "BarSource",
    "ChildFailed",
    "ClosePosition",
    "ClosedBar",
    "CoinBalance",
    "Direction",
    "Execution",
    "Flush",
    "Heartbeat",
    "Kline",
    "MalformedPayload",
    "Order",
    "OrderStatus",
    "Panic",
    "Ping",
    "Position",
    "Side",
    "Signal",
    "StreamStale",
    "Subscribe",
    "Ticker",
    "TradingState",
    "TradingStateChanged",
    "Unsubscribe",
    "Wallet",
]
