"""The coalescing hand-off from the public socket to the StateStore (actors/inbox.py).

What must hold: one drain told per batch, never a frame stranded (a frame put
just as a drain finishes is still merged), a restarted StateStore gets what
its predecessor never took, a flood does not starve the StateStore's mailbox,
and a batch leaves the state exactly as one tell per message would.
"""

from __future__ import annotations

import random
import threading
from datetime import timedelta

import pykka
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.base import ActorContext, Directory, Role
from actors.inbox import Inbox
from actors.state_store import LiveState, StateStore
from infra.config import load_config
from messages.market import Kline, MarketDataPending, Ticker
from messages.queries import GetHealth, GetTicker
from messages.types import ms_to_utc
from tests.helpers import wait_until

T0 = 1_700_000_040_000 - 1_700_000_040_000 % 60_000


class Ref:
    """A mocked actor ref: records the drains it is told; `dead` makes tell raise like pykka's."""

    def __init__(self):
        self.told: list[MarketDataPending] = []
        self.dead = False

    def tell(self, message):
        if self.dead:
            raise pykka.ActorDeadError("dead")
        self.told.append(message)


def snapshot(symbol="BTCUSDT", price="100", ts=T0) -> Ticker:
    return Ticker(symbol=symbol, is_snapshot=True, last_price=price, mark_price=price, index_price=price,
                  ts=ms_to_utc(ts))


def delta(seq: int, symbol="BTCUSDT", ts=T0, **fields) -> Ticker:
    fields = fields or {"bid1_size": f"{seq}.5"}
    return Ticker(symbol=symbol, is_snapshot=False, seq=seq, ts=ms_to_utc(ts), **fields)


def kline(minute: int, confirm: bool) -> Kline:
    start = T0 + minute * 60_000
    return Kline(symbol="BTCUSDT", interval="1", start=ms_to_utc(start), end=ms_to_utc(start + 59_999),
                 open="1", high="2", low="1", close="2", volume="1", turnover="2", confirm=confirm,
                 timestamp=ms_to_utc(start + 59_999))


# --- the inbox alone ----------------------------------------------------------------------

def test_one_drain_per_batch_and_a_new_one_only_after_an_empty_take():
    directory, ref = Directory(), Ref()
    directory.register(Role.STATE_STORE, ref)
    inbox = Inbox(directory, Role.STATE_STORE)
    assert inbox.put(1) and inbox.put(2) and inbox.put(3)
    assert len(ref.told) == 1 and ref.told[0].inbox is inbox
    assert inbox.take() == (1, 2, 3)
    # A non-empty take keeps the drain outstanding: the recipient takes again before it is done.
    inbox.put(4)
    assert len(ref.told) == 1
    assert inbox.take() == (4,)
    assert inbox.take() == ()  # empty: this drain is over
    inbox.put(5)
    assert len(ref.told) == 2 and inbox.take() == (5,)


def test_a_frame_put_just_as_the_drain_finishes_is_never_stranded():
    """Both orders of the race, forced: the put lands before the drain's last (empty) take, or after it."""
    directory, ref = Directory(), Ref()
    directory.register(Role.STATE_STORE, ref)
    inbox = Inbox(directory, Role.STATE_STORE)
    inbox.put("a")
    assert inbox.take() == ("a",)
    inbox.put("b")  # before the final take: that take must return it, no new drain needed
    assert len(ref.told) == 1 and inbox.take() == ("b",)
    assert inbox.take() == ()
    inbox.put("c")  # after the final take: the drain is over, so a new one is told
    assert len(ref.told) == 2 and inbox.take() == ("c",)


def test_no_state_store_means_undelivered_not_queued():
    directory = Directory()
    inbox = Inbox(directory, Role.STATE_STORE)
    assert inbox.put("x") is False and len(inbox) == 0


def test_a_dead_state_store_is_undelivered_and_its_successor_is_told():
    directory, dead, fresh = Directory(), Ref(), Ref()
    dead.dead = True
    directory.register(Role.STATE_STORE, dead)
    inbox = Inbox(directory, Role.STATE_STORE)
    assert inbox.put("lost") is False and len(inbox) == 0
    # Queued without a wake (mid-burst), then the wake finds it dead: dropped and counted, not piled up.
    assert inbox.put("a", wake=False) and inbox.put("b", wake=False) and len(inbox) == 2
    inbox.wake()
    assert len(inbox) == 0 and inbox.dropped == 3
    directory.register(Role.STATE_STORE, fresh)
    assert inbox.put("next") and len(fresh.told) == 1 and inbox.take() == ("next",)


def test_a_restarted_state_store_takes_what_its_predecessor_never_took():
    directory, old, new = Directory(), Ref(), Ref()
    directory.register(Role.STATE_STORE, old)
    inbox = Inbox(directory, Role.STATE_STORE)
    inbox.put(1)
    inbox.put(2)  # the old actor died before taking its drain
    directory.register(Role.STATE_STORE, new)
    inbox.put(3)
    assert len(old.told) == 1 and len(new.told) == 1
    assert inbox.take() == (1, 2, 3)


# --- the real StateStore draining it ------------------------------------------------------

@pytest.fixture
def store(write_config):
    app = load_config(write_config("symbols:\n  BTCUSDT:\n    intervals: ['1']\n"))
    directory = Directory()
    ref = StateStore.start(ActorContext(config=app, directory=directory))
    directory.register(Role.STATE_STORE, ref)
    yield directory, ref
    ref.stop(block=True, timeout=5)


def _ticker(ref) -> Ticker | None:
    return ref.ask(GetTicker(symbol="BTCUSDT"), timeout=5).ticker


@pytest.mark.timeout(60)
def test_every_frame_put_from_another_thread_is_merged_in_order(store):
    """Bursts with pauses between them, so drains keep ending while frames arrive: none is lost."""
    directory, ref = store
    inbox = Inbox(directory, Role.STATE_STORE)
    n = 3000
    rng = random.Random(7)
    pause = threading.Event()

    def produce():
        inbox.put(snapshot())
        for seq in range(1, n + 1):
            inbox.put(delta(seq))
            if rng.random() < 0.05:
                pause.wait(rng.random() / 1000)  # up to 1 ms: about the consumer's linger

    producer = threading.Thread(target=produce)
    producer.start()
    producer.join(30)
    wait_until(lambda: (t := _ticker(ref)) is not None and t.seq == n, timeout=10, what="the last delta merged")
    health = ref.ask(GetHealth(), timeout=5)
    assert health.streams["tickers.BTCUSDT"].frames == n + 1
    assert _ticker(ref).bid1_size == delta(n).bid1_size


class EndlessFlood:
    """An inbox that is never empty: a venue faster than the StateStore, for as long as it runs."""

    def __init__(self):
        self.seq = 0
        self.taken = 0

    def take(self):
        self.taken += 1
        if self.seq == 0:
            self.seq = 1
            return (snapshot(),)
        self.seq += 1
        return (delta(self.seq),)


@pytest.mark.timeout(60)
def test_a_flood_does_not_starve_the_mailbox(store):
    """A drain that never runs dry still lets asks through (it re-tells itself after its budget),
    and the actor still stops when told."""
    _, ref = store
    flood = EndlessFlood()
    ref.tell(MarketDataPending(inbox=flood))
    wait_until(lambda: flood.seq > 10, what="the flood merging")
    for _ in range(5):
        assert ref.ask(GetHealth(), timeout=2).streams["tickers.BTCUSDT"].frames > 0
    assert _ticker(ref).seq > 10


# --- a batch is the same as one message at a time ------------------------------------------

SYMBOLS = ("BTCUSDT", "ETHUSDT")


@st.composite
def market_message(draw):
    kind = draw(st.sampled_from(["snapshot", "delta", "delta", "delta", "kline"]))
    symbol = draw(st.sampled_from(SYMBOLS))
    ts = T0 + draw(st.integers(0, 10_000))
    if kind == "snapshot":
        return snapshot(symbol, price=str(draw(st.integers(1, 1000))), ts=ts)
    if kind == "kline":
        return kline(draw(st.integers(0, 3)), draw(st.booleans()))
    fields = draw(st.dictionaries(st.sampled_from(["last_price", "mark_price", "bid1_price", "bid1_size"]),
                                  st.integers(1, 1000).map(str), min_size=1))
    return delta(draw(st.integers(1, 10**6)), symbol, ts=ts, **fields)


def _view(state: LiveState):
    return (dict(state.tickers), dict(state.klines), {k: list(v) for k, v in state.bars.items()},
            dict(state.frames), dict(state.rejected), dict(state.dropped), set(state.received_at))


@settings(max_examples=200, deadline=None)
@given(st.lists(market_message(), max_size=30), st.integers(1, 8))
def test_a_batch_leaves_the_state_as_one_message_at_a_time_does(messages, cut):
    one_by_one, batched = LiveState(), LiveState()
    handlers = {Ticker: one_by_one.on_ticker, Kline: one_by_one.on_kline}
    for msg in messages:
        handlers[type(msg)](msg)
    for i in range(0, len(messages), cut):
        batched.on_market(tuple(messages[i:i + cut]))
    assert _view(batched) == _view(one_by_one)
    # Merged field by field: every value equal, including which fields were ever set.
    for symbol, ticker in one_by_one.tickers.items():
        assert batched.tickers[symbol].model_fields_set == ticker.model_fields_set


def test_a_batch_merge_keeps_the_latest_delta_values_and_its_time():
    state = LiveState()
    state.on_market((snapshot(), delta(1, bid1_size="1"), delta(2, ts=T0 + 5, last_price="101"),
                     delta(3, ts=T0 + 9, bid1_size="3")))
    t = state.tickers["BTCUSDT"]
    assert (t.seq, str(t.bid1_size), str(t.last_price), t.is_snapshot) == (3, "3", "101", True)
    assert t.ts == ms_to_utc(T0) + timedelta(milliseconds=9)
    assert state.frames["tickers.BTCUSDT"] == 4


# --- the router: one wake per burst of frames -------------------------------------------

def ticker_frame(seq: int, kind="delta") -> dict:
    data = {"symbol": "BTCUSDT", "bid1Size": f"{seq}.5"}
    if kind == "snapshot":
        data.update(lastPrice="100", markPrice="100", indexPrice="100")
    return {"topic": "tickers.BTCUSDT", "type": kind, "data": data, "cs": seq, "ts": T0}


def bursty_router():
    from actors.ws_public import PublicFrameRouter

    directory, ref = Directory(), Ref()
    directory.register(Role.STATE_STORE, ref)
    inbox = Inbox(directory, Role.STATE_STORE)
    router = PublicFrameRouter(directory, 1, ("tickers.BTCUSDT",), state_inbox=inbox)
    router.bursts = True  # what WsPublic sets for a socket that reports on_frame_done
    return router, inbox, ref


def test_frames_of_one_burst_wake_the_state_store_once_at_its_end():
    router, inbox, ref = bursty_router()
    asked = []

    def waiting(answer):
        return lambda: asked.append(answer) or answer

    router.on_frame(ticker_frame(1, "snapshot"))
    router.on_frame_done(waiting(True))  # more frames already on the wire: no wake yet
    router.on_frame(ticker_frame(2))
    router.on_frame_done(waiting(True))
    assert ref.told == [] and len(inbox) == 2
    router.on_frame(ticker_frame(3))
    router.on_frame_done(waiting(False))  # the burst ended
    assert len(ref.told) == 1 and [m.seq for m in inbox.take()] == [1, 2, 3]
    # While that drain is outstanding the socket is not even asked (a syscall saved per frame).
    router.on_frame(ticker_frame(4))
    router.on_frame_done(waiting(False))
    assert asked == [True, True, False] and len(ref.told) == 1
    assert [m.seq for m in inbox.take()] == [4]


def test_a_burst_that_ends_with_a_frame_that_is_no_market_data_still_wakes():
    """The last frame of a burst is an ack (or a pong, a rejected frame): the queued ticker is not stranded."""
    router, inbox, ref = bursty_router()
    router.on_frame(ticker_frame(1, "snapshot"))
    router.on_frame_done(lambda: True)
    router.on_frame({"op": "subscribe", "success": True, "ret_msg": "", "req_id": "x"})
    router.on_frame_done(lambda: False)
    assert len(ref.told) == 1 and [m.seq for m in inbox.take()] == [1]


def test_an_endless_burst_still_wakes_every_max_batch():
    from actors.ws_public import MAX_BATCH

    router, inbox, ref = bursty_router()
    for seq in range(1, MAX_BATCH + 1):
        router.on_frame(ticker_frame(seq, "snapshot" if seq == 1 else "delta"))
        router.on_frame_done(lambda: True)
    assert len(ref.told) == 1 and len(inbox.take()) == MAX_BATCH


def test_a_socket_that_goes_down_mid_burst_wakes_for_what_it_queued():
    router, inbox, ref = bursty_router()
    router.on_frame(ticker_frame(1, "snapshot"))
    router.on_frame_done(lambda: True)  # more was on the wire, then the connection died
    assert ref.told == []
    router.on_burst_end()  # WsPublic on SocketDown / retire
    assert len(ref.told) == 1 and [m.seq for m in inbox.take()] == [1]


def test_a_malformed_frame_in_a_burst_is_rejected_and_counted_while_the_good_ones_are_queued():
    router, inbox, ref = bursty_router()
    router.on_frame(ticker_frame(1, "snapshot"))
    router.on_frame({"topic": "tickers.BTCUSDT", "type": "delta", "data": {"symbol": "BTCUSDT", "bid1Size": "x"},
                     "cs": 2, "ts": T0})
    router.on_frame(ticker_frame(3))
    router.on_frame_done(lambda: False)
    assert router.counts["rejected"] == 1 and router.counts["frames"] == 3
    # In order: the snapshot, the refusal charged to its stream (for the StateStore's health), the next delta.
    taken = inbox.take()
    assert [type(m).__name__ for m in taken] == ["Ticker", "FrameRejected", "Ticker"]
    assert [m.seq for m in taken if isinstance(m, Ticker)] == [1, 3] and taken[1].stream == "tickers.BTCUSDT"
