"""WsPublic actor and its frame router.

WsPublic owns the public pybit WebSocket: ticker and kline subscriptions,
parsing frames into messages told to the StateStore (and closed bars to the
DbWriter). `PublicFrameRouter` is what pybit's callbacks call: it only
parses and tells (see actors/frame_router.py).

Not built yet: the actor does not open the socket or manage subscriptions;
that is completed by the WebSocket/Supervisor work. It only takes part in
the node's start/stop order.
"""

from __future__ import annotations

from actors.base import Directory, NodeActor, Role
from actors.frame_router import Frame, FrameRouter, Parsed
from messages.market import Kline, Ticker


def parse_kline(frame: Frame) -> Parsed:
    for kline in Kline.from_bybit(frame):
        yield Role.STATE_STORE, kline
        if kline.confirm:
            yield Role.DB_WRITER, kline.closed_bar()


def parse_ticker(frame: Frame) -> Parsed:
    yield Role.STATE_STORE, Ticker.from_bybit(frame)


class PublicFrameRouter(FrameRouter):
    def __init__(self, directory: Directory, generation: int):
        super().__init__(directory, Role.WS_PUBLIC, generation)

    def on_kline(self, frame: Frame) -> None:
        self.route(frame, parse_kline)

    def on_ticker(self, frame: Frame) -> None:
        self.route(frame, parse_ticker)


class WsPublic(NodeActor):
    role = Role.WS_PUBLIC
