"""WsPrivate actor and its frame router.

WsPrivate owns the private pybit WebSocket: auth, then `order`,
`execution`, `position`, `wallet` (and `dcp.future`) subscriptions, parsing
frames into messages told to the StateStore. `PrivateFrameRouter` is what
pybit's callbacks call: it only parses and tells (actors/frame_router.py).

Not built yet: the actor does not open the socket; that is completed by the
WebSocket/Supervisor work (subscribe only after the auth answer, reseed
wallet/positions/orders/executions over REST after every reconnect, keep
the trading gate closed until then). It only takes part in the node's
start/stop order.
"""

from __future__ import annotations

from actors.base import Directory, NodeActor, Role
from actors.frame_router import Frame, FrameRouter, Parsed
from messages.account import Execution, Order, Position, Wallet


def parse_order(frame: Frame) -> Parsed:
    return [(Role.STATE_STORE, o) for o in Order.from_ws(frame)]


def parse_execution(frame: Frame) -> Parsed:
    return [(Role.STATE_STORE, e) for e in Execution.from_ws(frame)]


def parse_position(frame: Frame) -> Parsed:
    return [(Role.STATE_STORE, p) for p in Position.from_ws(frame)]


def parse_wallet(frame: Frame) -> Parsed:
    return [(Role.STATE_STORE, w) for w in Wallet.from_ws(frame)]


class PrivateFrameRouter(FrameRouter):
    def __init__(self, directory: Directory, generation: int):
        super().__init__(directory, Role.WS_PRIVATE, generation)

    def on_order(self, frame: Frame) -> None:
        self.route(frame, parse_order)

    def on_execution(self, frame: Frame) -> None:
        self.route(frame, parse_execution)

    def on_position(self, frame: Frame) -> None:
        self.route(frame, parse_position)

    def on_wallet(self, frame: Frame) -> None:
        self.route(frame, parse_wallet)


class WsPrivate(NodeActor):
    role = Role.WS_PRIVATE
