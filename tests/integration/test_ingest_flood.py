"""A ticker flood through the real path: pybit socket (ManagedWebSocket) -> router -> inbox -> StateStore.

Frames are handed to the StateStore once per burst (actors/inbox.py); what must hold
is that every delta the venue sent is merged, in order, and that the last frame of
the flood is merged although no frame comes after it (the simulator's clock is
manual: once the flood stops, the feed is silent).
"""

from __future__ import annotations

import json

import pytest
from websocket import WebSocketTimeoutException, create_connection

from actors.base import ActorContext, Directory, Role
from actors.state_store import StateStore
from actors.ws_public import WsPublic
from infra.config import load_config
from messages.queries import GetHealth, GetTicker
from messages.subscriptions import DesiredSubscriptions, SymbolStreams
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(90)
SYMBOLS = ("BTCUSDT", "ETHUSDT")


@pytest.fixture
def stream(sim_factory, write_config):
    venue = sim_factory(symbols=list(SYMBOLS))
    app = load_config(write_config("symbols:\n  BTCUSDT:\n    intervals: ['1']\n"))
    directory = Directory()
    desired = DesiredSubscriptions(symbols={s: SymbolStreams(tickers=True) for s in SYMBOLS})
    ctx = ActorContext(config=app, directory=directory, urls=venue.urls, subscriptions=desired)
    store = StateStore.start(ctx)
    directory.register(Role.STATE_STORE, store)
    ws = WsPublic.start(ctx)
    directory.register(Role.WS_PUBLIC, ws)
    yield venue, store
    ws.stop(block=True, timeout=10)
    store.stop(block=True, timeout=10)


def _ticker(store, symbol):
    return store.ask(GetTicker(symbol=symbol), timeout=5).ticker


def _frames(store, symbol):
    return store.ask(GetHealth(), timeout=5).streams[f"tickers.{symbol}"].frames


def _last_cs_on_the_wire(venue, topics):
    """A second, bare subscriber reads the flood to its end: the last `cs` the venue sent per topic."""
    ws = create_connection(venue.urls.ws_public, timeout=5)
    try:
        ws.send(json.dumps({"op": "subscribe", "req_id": "probe", "args": topics}))
        last: dict[str, int] = {}
        venue.faults.ticker_rate(per_s=3000, seconds=1.0)
        ws.settimeout(1.0)  # the clock is manual: once the flood ends, the wire goes quiet
        while True:
            try:
                frame = json.loads(ws.recv())
            except WebSocketTimeoutException:
                return last
            if frame.get("topic") in topics:
                last[frame["topic"]] = frame["cs"]
    finally:
        ws.close()


def test_every_delta_of_a_flood_is_merged_and_the_last_one_is_not_stranded(stream):
    venue, store = stream
    wait_until(lambda: all(_ticker(store, s) is not None for s in SYMBOLS), timeout=10, what="snapshots")
    before = {s: (_ticker(store, s).seq, _frames(store, s)) for s in SYMBOLS}
    last = _last_cs_on_the_wire(venue, [f"tickers.{s}" for s in SYMBOLS])
    # The venue's last delta is in state, with no frame after it to flush it.
    wait_until(lambda: all(_ticker(store, s).seq == last[f"tickers.{s}"] for s in SYMBOLS), timeout=20,
               what="the last delta of the flood merged")
    for symbol in SYMBOLS:
        seq0, frames0 = before[symbol]
        seq1, frames1 = _ticker(store, symbol).seq, _frames(store, symbol)
        assert seq1 - seq0 > 1000
        assert frames1 - frames0 == seq1 - seq0  # one merged delta per sequence number: none lost
