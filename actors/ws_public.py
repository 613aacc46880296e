"""WsPublic: owns the public pybit WebSocket (tickers and klines of the configured symbols).

Frames are parsed and told onward by `PublicFrameRouter` on pybit's thread
(actors/frame_router.py): klines and tickers to the StateStore, closed bars
also to the DbWriter. The actor itself opens the socket on start, keeps the
desired subscription set (config plus `Subscribe` messages) and closes the
socket on stop, retiring its router so late frames are dropped.

Not built yet (the WebSocket/Supervisor work): restart on staleness with the
desired set replayed, the REST fetch of bars missed across a reconnect, and
`Unsubscribe` (pybit drops a whole multi-topic subscription, REFERENCE.md
5.2, so it needs a socket rebuild). `Unsubscribe` is refused with a
`ws.unsubscribe_unsupported` warning until then.
"""

from __future__ import annotations

from typing import Any, Callable

from actors.base import ActorContext, Directory, Role
from actors.frame_router import Frame, FrameRouter, Parsed
from actors.ws_base import WsActor
from infra.bybit.clients import make_public_ws
from messages.commands import Subscribe, Unsubscribe
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


class WsPublic(WsActor):
    role = Role.WS_PUBLIC

    def __init__(self, ctx: ActorContext):
        super().__init__(ctx, PublicFrameRouter(ctx.directory, ctx.generation))
        self._subscribed: set[str] = set()  # topics, e.g. "kline.1.BTCUSDT"

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {Subscribe: self._subscribe, Unsubscribe: self._unsubscribe}

    def on_start(self) -> None:
        if self._ctx.urls is None:
            raise RuntimeError("WsPublic needs the venue's URLs")
        # pybit connects inside its constructor and raises if it cannot.
        self._ws = make_public_ws(self._ctx.urls)
        self._log.info("ws.connected", url=self._ctx.urls.ws_public)
        for symbol, streams in self._ctx.config.node.symbols.items():
            self._subscribe(Subscribe(symbol=symbol, intervals=streams.intervals, tickers=streams.tickers))
        super().on_start()


    def _subscribe(self, msg: Subscribe) -> None:
        if msg.tickers and f"tickers.{msg.symbol}" not in self._subscribed:
            self._ws.ticker_stream(symbol=msg.symbol, callback=self._router.on_ticker)
            self._subscribed.add(f"tickers.{msg.symbol}")
        for interval in msg.intervals:
            topic = f"kline.{interval}.{msg.symbol}"
            if topic not in self._subscribed:
                self._ws.kline_stream(interval=interval, symbol=msg.symbol, callback=self._router.on_kline)
                self._subscribed.add(topic)
        self._log.info("ws.subscribed", symbol=msg.symbol, topics=sorted(t for t in self._subscribed if t.endswith(msg.symbol)))

    def _unsubscribe(self, msg: Unsubscribe) -> None:
        self._log.warning("ws.unsubscribe_unsupported", symbol=msg.symbol)
