"""StateStore health and account state: ready only when it means something (DATA-009, DATA-011, DATA-012)."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from decimal import Decimal

from actors.base import ActorContext, Directory, Role
from actors.state_store import LiveState, ReadinessWatch, StateStore
from infra.config import load_config
from infra.logging import get_logger
from messages import Execution, Kline, Order, Position, Ticker, Wallet
from messages.account import AccountReseed, PositionPnl, PrivatePulse
from messages.control import FrameRejected, ReadinessChanged, SocketStatus
from messages.queries import GetHealth
from messages.types import now_utc
from tests.conftest import SAMPLES
from tests.helpers import wait_until

TOPICS = ("tickers.BTCUSDT", "kline.5.BTCUSDT")


def sample(name):
    return json.loads((SAMPLES / name).read_text())


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def wallet() -> Wallet:
    return Wallet.from_ws(sample("4.13-private-wallet-2.json"))[0]


def execution(exec_id="e-1", exec_type="Trade") -> Execution:
    frame = sample("4.12-private-execution-2.json")
    frame["data"][0].update(execId=exec_id, execType=exec_type)
    return Execution.from_ws(frame)[0]


def reseed(**kw) -> AccountReseed:
    base = dict(wallet=wallet(), positions=(Position(symbol="BTCUSDT", size=Decimal(0)),), open_orders=(),
                executions=(), symbols_checked=("BTCUSDT",), requested_at=now_utc())
    base.update(kw)
    return AccountReseed(**base)


def feed_public(state: LiveState) -> None:
    state.on_ticker(Ticker.from_bybit(sample("4.7-tickers-symbol-linear-1.json")))
    state.on_kline(Kline.from_bybit(sample("4.6-kline-interval-symbol-1.json"))[0])


def ready_state(clock) -> LiveState:
    state = LiveState(clock=clock, public_stale_after_s=30, private_stale_after_s=60, public_topics=TOPICS)
    state.on_socket_status(SocketStatus(socket="public", generation=0, connected=True, topics=TOPICS))
    state.on_socket_status(SocketStatus(socket="private", generation=0, connected=True))
    state.on_reseed(reseed())
    feed_public(state)
    return state


def test_not_ready_at_start_before_any_data():
    state = LiveState(clock=Clock(), public_topics=TOPICS)
    h = state.health()
    assert h.ready is False
    assert {"wallet not seeded", "positions not seeded", "private socket down"} <= set(h.reasons)
    assert "tickers.BTCUSDT no data yet" in h.reasons
    assert h.streams["tickers.BTCUSDT"].age_s is None and h.streams["tickers.BTCUSDT"].stale


def test_ready_when_seeded_healed_and_fresh_then_not_when_one_stream_goes_silent():
    clock = Clock()
    state = ready_state(clock)
    assert state.health().ready, state.health().reasons
    clock.now += 20
    state.on_ticker(Ticker.from_bybit(sample("4.7-tickers-symbol-linear-1.json")))  # the ticker keeps talking
    state.on_private_pulse(PrivatePulse())
    assert state.health().ready  # kline 20 s old: inside the 30 s window
    clock.now += 10.5  # kline now 30.5 s old: beyond the window (the parameter is used, DATA-009)
    state.on_ticker(Ticker.from_bybit(sample("4.7-tickers-symbol-linear-1.json")))
    h = state.health()
    assert h.ready is False and h.stale_streams == ("kline.5.BTCUSDT",)
    assert h.streams["kline.5.BTCUSDT"].stale and not h.streams["tickers.BTCUSDT"].stale
    assert h.streams["kline.5.BTCUSDT"].age_s == 30.5


def test_public_frames_with_no_topic_to_charge_show_on_the_public_socket_line():
    """A public frame that is not JSON (or names no subscribed topic) is refused by the router
    with stream "public"; health shows it on the socket's own line, with the topics' refusals."""
    clock = Clock()
    state = ready_state(clock)
    state.on_frame_rejected(FrameRejected(stream="public"))
    state.on_frame_rejected(FrameRejected(stream="public"))
    state.on_frame_rejected(FrameRejected(stream="tickers.BTCUSDT"))
    h = state.health()
    public = h.streams["public"]
    assert public.rejected == 3 and h.streams["tickers.BTCUSDT"].rejected == 1
    assert public.connected and public.frames == 2 and public.age_s == 0 and not public.watched
    assert h.ready, h.reasons  # a count, not a verdict: freshness is judged per topic


def test_a_private_reconnect_closes_the_gate_until_its_reseed():
    clock = Clock()
    state = ready_state(clock)
    state.on_socket_status(SocketStatus(socket="private", generation=0, connected=False, reason="lost"))
    assert "private socket down (lost)" in state.health().reasons
    state.on_socket_status(SocketStatus(socket="private", generation=0, connected=True))
    assert state.health().reasons == ("private seam not healed (REST reseed pending)",)
    state.on_reseed(reseed())
    assert state.health().ready


def test_quiet_account_is_fine_but_a_silent_private_socket_is_stale():
    clock = Clock()
    state = ready_state(clock)
    for _ in range(3):  # pongs every 20 s keep a quiet account's socket fresh
        clock.now += 20
        state.on_private_pulse(PrivatePulse())
        feed_public(state)
    h = state.health()
    assert h.ready and h.streams["order"].watched is False and h.streams["order"].age_s is None
    clock.now += 61
    feed_public(state)
    h = state.health()
    assert not h.ready and h.stale_streams == ("private",)


def test_public_topics_follow_the_latest_socket_status():
    clock = Clock()
    state = ready_state(clock)
    state.on_socket_status(SocketStatus(socket="public", generation=1, connected=True,
                                        topics=(*TOPICS, "tickers.ETHUSDT")))
    assert state.health().reasons == ("tickers.ETHUSDT no data yet",)
    state.on_socket_status(SocketStatus(socket="public", generation=1, connected=True, topics=("tickers.BTCUSDT",)))
    assert state.health().ready


def test_duplicate_exec_id_counted_once_and_non_trades_kept_apart():
    state = LiveState()
    assert state.on_execution(execution("e-1")) is True
    assert state.on_execution(execution("e-1")) is False
    for i, kind in enumerate(("Funding", "AdlTrade", "BustTrade", "Settle", "Delivery")):
        assert state.on_execution(execution(f"x-{i}", kind)) is True
    assert state.on_execution(execution("x-0", "Funding")) is False
    snap = state.snapshot()
    assert [e.exec_id for e in snap.recent_executions] == ["e-1"]
    assert [e.exec_type for e in snap.other_executions] == ["Funding", "AdlTrade", "BustTrade", "Settle", "Delivery"]
    assert state.dropped["duplicate_execution"] == 2


def test_reseed_brings_missed_fills_and_never_undoes_newer_stream_updates():
    state = LiveState()
    state.on_socket_status(SocketStatus(socket="private", generation=0, connected=True))
    item = sample("3.8-get-v5-order-realtime-1.json")["result"]["list"][0]
    open_order = Order.from_bybit(item)
    requested = now_utc()
    # Streamed after the REST read was sent: this order filled; the REST answer still lists it open.
    filled = Order.from_bybit(copy.deepcopy(item) | {"orderStatus": "Filled"})
    state.on_order(filled)
    stale_open = Order.from_bybit(copy.deepcopy(item) | {"orderId": "gone-during-outage"})
    state.open_orders["gone-during-outage"] = stale_open  # open before the outage, absent from REST now
    counts = state.on_reseed(reseed(open_orders=(open_order,), executions=(execution("missed"), execution("f", "Funding")),
                                    requested_at=requested + timedelta(seconds=1)))
    assert state.open_orders == {}
    assert counts["new_fills"] == 1 and counts["new_other_executions"] == 1 and counts["orders_closed"] == 1
    assert [e.exec_id for e in state.snapshot().recent_executions] == ["missed"]
    assert state.health().private_seam_healed and state.wallet_seeded and state.positions_seeded


def test_readiness_flips_are_told_once_each():
    watch = ReadinessWatch(get_logger("test"))
    first = watch.check(LiveState(public_topics=TOPICS).health())
    assert first is not None and first.ready is False  # said once at start: a new StateStore closes the gate
    clock = Clock()
    state = ready_state(clock)
    change = watch.check(state.health())
    assert isinstance(change, ReadinessChanged) and change.ready
    assert watch.check(state.health()) is None
    clock.now += 31
    change = watch.check(state.health())
    assert change is not None and not change.ready and set(change.stale_streams) == set(TOPICS)


def test_pnl_is_named_for_what_it_is_measured_against():
    pos = Position(symbol="BTCUSDT", side="Buy", size=Decimal("0.1"), entryPrice="50000", leverage="10")
    pnl = PositionPnl.of(pos, Decimal("50500"))
    assert pnl.unrealised_pnl_usdt == Decimal("50.0")
    assert pnl.notional_usdt == Decimal("5000.0") and pnl.margin_usdt == Decimal("500")
    assert pnl.pct_of_notional == Decimal("1") and pnl.pct_of_margin == Decimal("10")
    short = PositionPnl.of(Position(symbol="BTCUSDT", side="Sell", size=Decimal("0.1"), entryPrice="50000", leverage="10"), Decimal("50500"))
    assert short.unrealised_pnl_usdt == Decimal("-50.0") and short.pct_of_margin == Decimal("-10")


class PanicPeer:
    def __init__(self):
        self.told = []

    def tell(self, m):
        self.told.append(m)


def test_actor_ticks_on_its_own_and_tells_panic_when_ready_flips(write_config):
    app = load_config(write_config("supervisor:\n  check_interval_s: 0.02\n  public_stale_after_s: 0.3\n"
                                   "symbols:\n  BTCUSDT:\n    intervals: ['5']\n"))
    directory, panic = Directory(), PanicPeer()
    directory.register(Role.PANIC, panic)
    ref = StateStore.start(ActorContext(config=app, directory=directory))
    assert ref.ask(GetHealth(), timeout=5).ready is False
    assert [m.ready for m in panic.told] == [False]  # told at start
    ref.tell(SocketStatus(socket="private", generation=0, connected=True))
    ref.tell(reseed())
    ref.tell(Ticker.from_bybit(sample("4.7-tickers-symbol-linear-1.json")))
    ref.tell(Kline.from_bybit(sample("4.6-kline-interval-symbol-1.json"))[0])
    wait_until(lambda: any(m.ready for m in panic.told), timeout=5, what="ReadinessChanged(ready=True)")
    # Nothing more arrives: within the 0.3 s window plus a tick the streams are stale and the gate closes.
    wait_until(lambda: panic.told and not panic.told[-1].ready, timeout=5, what="ReadinessChanged(ready=False)")
    assert [m.ready for m in panic.told] == [False, True, False]
    # The ticker arrived a moment before the kline: it may go stale one tick earlier.
    assert panic.told[-1].stale_streams and set(panic.told[-1].stale_streams) <= {"tickers.BTCUSDT", "kline.5.BTCUSDT"}
    wait_until(lambda: len(ref.ask(GetHealth(), timeout=5).stale_streams) == 2, timeout=5, what="both stale")


def test_a_replaced_socket_actor_cannot_undo_its_successor():
    clock = Clock()
    state = ready_state(clock)  # generation 0 connected and reseeded
    state.on_socket_status(SocketStatus(socket="private", generation=1, connected=True))
    assert not state.health().private_seam_healed
    state.on_reseed(reseed())  # generation 0's late reseed heals nothing
    state.on_socket_status(SocketStatus(socket="private", generation=0, connected=False, reason="stopped"))
    h = state.health()
    assert not h.private_seam_healed and h.streams["private"].connected
    state.on_reseed(reseed(generation=1))
    assert state.health().ready
