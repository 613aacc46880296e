"""PublicFrameRouter: parse and tell, never raise into pybit, drop frames of a retired generation."""

from __future__ import annotations

import json

from actors.base import Directory, Role
from actors.ws_public import PublicFrameRouter
from messages import ClosedBar, Kline, Ticker
from tests.conftest import SAMPLES


class Peer:
    """A mocked peer: records what it is told."""

    def __init__(self):
        self.told = []

    def tell(self, message):
        self.told.append(message)


def sample(name):
    return json.loads((SAMPLES / name).read_text())


def setup():
    directory = Directory()
    store, writer = Peer(), Peer()
    directory.register(Role.STATE_STORE, store)
    directory.register(Role.DB_WRITER, writer)
    return directory, store, writer


def test_running_kline_goes_to_state_only_closed_kline_also_to_db_writer():
    directory, store, writer = setup()
    router = PublicFrameRouter(directory, generation=1)
    frame = sample("4.6-kline-interval-symbol-1.json")
    router.on_kline(frame)
    assert [type(m) for m in store.told] == [Kline] and writer.told == []
    frame["data"][0]["confirm"] = True
    router.on_kline(frame)
    assert isinstance(writer.told[0], ClosedBar) and writer.told[0].source == "ws"


def test_malformed_frames_are_counted_and_never_raise():
    directory, store, writer = setup()
    router = PublicFrameRouter(directory, generation=1)
    bad = sample("4.6-kline-interval-symbol-1.json")
    bad["data"][0]["close"] = "NaN"
    router.on_kline(bad)
    router.on_kline({"nonsense": True})
    router.on_ticker("not even a dict")  # type: ignore[arg-type]
    # Only the refusals reach the StateStore (for its per-stream health), nothing of the frames.
    assert [(type(m).__name__, m.stream) for m in store.told] == [
        ("FrameRejected", "kline.5.BTCUSDT"), ("FrameRejected", "public"), ("FrameRejected", "public")]
    assert writer.told == []
    assert router.counts["rejected"] == 3


def test_ticker_frames_are_told_to_the_state_store():
    directory, store, _ = setup()
    router = PublicFrameRouter(directory, generation=1)
    router.on_ticker(sample("4.7-tickers-symbol-linear-1.json"))
    assert isinstance(store.told[0], Ticker) and store.told[0].is_snapshot


def test_retired_generation_drops_late_frames():
    directory, store, writer = setup()
    router = PublicFrameRouter(directory, generation=1)
    router.retired = True
    router.on_kline(sample("4.6-kline-interval-symbol-1.json"))
    assert store.told == [] and router.counts["late"] == 1


def test_missing_peer_is_counted_not_raised():
    router = PublicFrameRouter(Directory(), generation=1)
    router.on_kline(sample("4.6-kline-interval-symbol-1.json"))
    assert router.counts["undelivered"] == 1


def test_a_frame_with_one_bad_item_is_refused_whole():
    directory, store, writer = setup()
    router = PublicFrameRouter(directory, generation=1)
    frame = sample("4.6-kline-interval-symbol-1.json")
    good = dict(frame["data"][0], confirm=True)
    bad = dict(good, close="-1")
    frame["data"] = [good, bad]
    router.on_kline(frame)
    assert [type(m).__name__ for m in store.told] == ["FrameRejected"] and writer.told == []
    assert router.counts["rejected"] == 1
