"""WsPrivate: owns the private pybit WebSocket (auth, order/execution/position/wallet, dcp.future).

Frames are parsed and told to the StateStore by `PrivateFrameRouter` on
pybit's thread (actors/frame_router.py). The actor opens the socket on
start (pybit authenticates, then subscribes), subscribes `dcp.future` so
that disconnect-cancel-all can fire for this connection, and closes the
socket on stop.

Not built yet (the WebSocket/Supervisor work): waiting for the auth answer
before subscribing, reseeding wallet/positions/orders/executions over REST
after every reconnect with the trading gate closed until then, and restart
on staleness.
"""

from __future__ import annotations

from actors.base import ActorContext, Directory, Role
from actors.frame_router import Frame, FrameRouter, Parsed
from actors.ws_base import WsActor
from infra.bybit.clients import make_private_ws
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

    def on_dcp(self, frame: Frame) -> None:
        """dcp.future carries nothing the node keeps; the subscription itself is what counts."""


class WsPrivate(WsActor):
    role = Role.WS_PRIVATE

    def __init__(self, ctx: ActorContext):
        super().__init__(ctx, PrivateFrameRouter(ctx.directory, ctx.generation))

    def on_start(self) -> None:
        if self._ctx.urls is None or self._ctx.config.credentials is None:
            raise RuntimeError("WsPrivate needs the venue's URLs and API credentials")
        self._ws = make_private_ws(self._ctx.urls, self._ctx.config.credentials)
        r = self._router
        self._ws.order_stream(callback=r.on_order)
        self._ws.execution_stream(callback=r.on_execution)
        self._ws.position_stream(callback=r.on_position)
        self._ws.wallet_stream(callback=r.on_wallet)
        # pybit has no helper for dcp.future; its subscribe() formats every topic
        # with a symbol, which this topic has no placeholder for.
        self._ws.subscribe("dcp.future", r.on_dcp, symbol="-")
        self._log.info("ws.connected", url=self._ctx.urls.ws_private, topics=["order", "execution", "position", "wallet", "dcp.future"])
        super().on_start()
