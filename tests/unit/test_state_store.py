"""StateStore logic (LiveState) and the actor's snapshot answer."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta
from decimal import Decimal

from actors.base import ActorContext, Directory
from actors.state_store import LiveState, StateStore
from infra.config import load_config
from messages import ClosedBar, Execution, Kline, Order, Ticker
from messages.account import AccountReseed
from messages.queries import GetSnapshot
from messages.types import Side, now_utc
from tests.conftest import SAMPLES
from tests.trading_fakes import wallet


def sample(name):
    return json.loads((SAMPLES / name).read_text())


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def bar(minute: int, close="100") -> ClosedBar:
    return ClosedBar(symbol="BTCUSDT", interval="1", open_time=1_700_000_040_000 + minute * 60_000,
                     open="100", high="101", low="99", close=close, volume="1", turnover="100", source="ws")


def test_no_data_means_no_age_not_healthy():
    clock = FakeClock()
    state = LiveState(clock=clock)
    snap = state.snapshot()
    assert snap.age_s("tickers.BTCUSDT") is None and snap.age_s("wallet") is None
    state.on_ticker(Ticker.from_bybit(sample("4.7-tickers-symbol-linear-1.json")))
    clock.now += 2.5
    assert state.snapshot().age_s("tickers.BTCUSDT") == 2.5


def test_ticker_delta_before_snapshot_is_dropped_and_counted():
    state = LiveState()
    delta = Ticker.from_bybit(sample("4.7-tickers-symbol-linear-2-constructed-delta.json"))
    assert state.on_ticker(delta) is False
    assert "BTCUSDT" not in state.tickers and state.dropped == {"ticker_delta_without_snapshot": 1}
    assert state.snapshot().age_s("tickers.BTCUSDT") is None


def test_ticker_snapshot_then_delta_merges():
    state = LiveState()
    state.on_ticker(Ticker.from_bybit(sample("4.7-tickers-symbol-linear-1.json")))
    state.on_ticker(Ticker.from_bybit(sample("4.7-tickers-symbol-linear-2-constructed-delta.json")))
    t = state.snapshot().tickers["BTCUSDT"]
    assert t.bid1_price == Decimal("66666.50") and t.last_price == Decimal("66666.60")


def test_bar_buffer_uses_the_configured_size_for_every_key():
    state = LiveState(bar_buffer_len=3)
    for m in range(5):
        state.on_closed_bar(bar(m))
    other = bar(0).model_copy(update={"symbol": "ETHUSDT"})
    state.on_closed_bar(other)
    snap = state.snapshot()
    assert [b.open_ms for b in snap.bars[("BTCUSDT", "1")]] == [bar(m).open_ms for m in (2, 3, 4)]
    assert len(snap.bars[("ETHUSDT", "1")]) == 1 and state.bars[("ETHUSDT", "1")].maxlen == 3


def test_repeated_bar_replaces_and_older_bar_is_refused():
    state = LiveState()
    state.on_closed_bar(bar(1))
    assert state.on_closed_bar(bar(1, close="100.5")) is True
    assert state.on_closed_bar(bar(0)) is False
    (only,) = state.snapshot().bars[("BTCUSDT", "1")]
    assert only.close == Decimal("100.5") and state.dropped == {"bar_out_of_order": 1}


def test_duplicate_execution_is_recorded_once():
    state = LiveState()
    (ex,) = Execution.from_ws(sample("4.12-private-execution-2.json"))
    assert state.on_execution(ex) is True
    assert state.on_execution(ex) is False
    assert len(state.snapshot().recent_executions) == 1


def test_orders_leave_the_open_set_when_closed():
    state = LiveState()
    item = sample("3.8-get-v5-order-realtime-1.json")["result"]["list"][0]
    state.on_order(Order.from_bybit(item))
    assert list(state.snapshot().open_orders) == [item["orderId"]]
    filled = copy.deepcopy(item) | {"orderStatus": "Filled"}
    state.on_order(Order.from_bybit(filled))
    assert state.snapshot().open_orders == {}


def test_snapshot_is_isolated_from_later_updates():
    state = LiveState()
    state.on_closed_bar(bar(0))
    snap = state.snapshot()
    state.on_closed_bar(bar(1))
    assert len(snap.bars[("BTCUSDT", "1")]) == 1


def test_actor_answers_snapshot_asks(write_config):
    ctx = ActorContext(config=load_config(write_config("")), directory=Directory())
    ref = StateStore.start(ctx)
    frame = sample("4.6-kline-interval-symbol-1.json")
    (kline,) = Kline.from_bybit(frame)
    ref.tell(kline)
    snap = ref.ask(GetSnapshot(), timeout=5)
    assert snap.klines[("BTCUSDT", "5")] == kline and snap.age_s("kline.5.BTCUSDT") is not None


def test_trading_view_is_the_snapshots_portfolio_and_ticker_in_one_answer():
    """What the Executor reads for one signal equals what it would derive from a whole snapshot."""
    from messages.trading import PortfolioSnapshot
    from tests.trading_fakes import position

    clock = FakeClock()
    state = LiveState(clock=clock)
    state.on_wallet(wallet("12000"))
    state.on_position(position("BTCUSDT", Side.BUY, "0.01"))
    state.on_position(position("ETHUSDT", None, "0"))  # flat: not a position to judge
    state.on_ticker(Ticker.from_bybit(sample("4.7-tickers-symbol-linear-1.json")))
    clock.now += 1.5
    view = state.trading_view("BTCUSDT")
    snap = state.snapshot()
    assert view.portfolio == PortfolioSnapshot.from_state(snap)
    assert [p.symbol for p in view.portfolio.positions] == ["BTCUSDT"] and view.portfolio.equity == Decimal("12000")
    assert view.ticker.ticker == snap.tickers["BTCUSDT"] and view.ticker.age_s == 1.5
    unknown = state.trading_view("SOLUSDT").ticker
    assert unknown.ticker is None and unknown.age_s is None


def test_a_confirmed_kline_lands_in_the_bar_buffer():
    state = LiveState()
    frame = sample("4.6-kline-interval-symbol-1.json")
    state.on_kline(Kline.from_bybit(frame)[0])
    assert state.snapshot().bars == {}
    frame["data"][0]["confirm"] = True
    state.on_kline(Kline.from_bybit(frame)[0])
    (closed,) = state.snapshot().bars[("BTCUSDT", "5")]
    assert closed.open_ms == 1672324800000 and closed.source == "ws"


def test_a_frame_the_router_refused_is_counted_against_its_stream():
    from messages.control import FrameRejected

    state = LiveState(public_topics=("tickers.BTCUSDT",))
    state.on_frame_rejected(FrameRejected(stream="tickers.BTCUSDT", reason="lastPrice: not a number"))
    state.on_frame_rejected(FrameRejected(stream="private", reason="not JSON"))
    state.on_frame_rejected(FrameRejected(stream="order", reason="orderId: missing"))
    streams = state.health().streams
    assert streams["tickers.BTCUSDT"].rejected == 1
    assert streams["private"].rejected == 2 and streams["order"].rejected == 1


def _order_item() -> tuple[dict, int]:
    """A REST open order (raw) and its createdTime in ms: the order the updates below are about."""
    item = sample("3.8-get-v5-order-realtime-1.json")["result"]["list"][0]
    return item, int(item["createdTime"])


def _order_at(item: dict, status: str, updated_ms: int) -> Order:
    return Order.from_bybit(copy.deepcopy(item) | {"orderStatus": status, "updatedTime": str(updated_ms)})


def _reseed(open_orders: tuple[Order, ...], requested_at: datetime) -> AccountReseed:
    return AccountReseed(wallet=wallet(), positions=(), open_orders=open_orders, executions=(), symbols_checked=(),
                         requested_at=requested_at)


def test_a_late_open_update_after_the_order_closed_does_not_reopen_it():
    """The private stream may deliver an order's older 'New' after its 'Filled' (two frames of one
    burst, a replay across a reconnect). A closed order brought back into `open_orders` is a
    phantom resting order the trading path would count and try to cancel."""
    state = LiveState()
    item, t = _order_item()
    state.on_order(_order_at(item, "Filled", t + 2_000))
    state.on_order(_order_at(item, "New", t + 1_000))
    assert state.snapshot().open_orders == {}
    assert state.dropped == {"order_out_of_order": 1}


def test_an_older_open_update_does_not_overwrite_a_newer_one():
    state = LiveState()
    item, t = _order_item()
    state.on_order(_order_at(item, "PartiallyFilled", t + 2_000))
    state.on_order(_order_at(item, "New", t + 1_000))
    (kept,) = state.snapshot().open_orders.values()
    assert kept.order_status.value == "PartiallyFilled"


def test_an_order_update_of_the_same_instant_still_applies():
    """Bybit stamps updatedTime in ms: two changes in one ms must not freeze the older one."""
    state = LiveState()
    item, t = _order_item()
    state.on_order(_order_at(item, "New", t + 1_000))
    state.on_order(_order_at(item, "Filled", t + 1_000))
    assert state.snapshot().open_orders == {}


def test_a_reseed_restores_a_triggered_conditional_whose_new_frame_was_missed():
    """'Triggered' is the venue's transient step from Untriggered to New, same order id. When the
    socket drops between the two frames, the REST reseed is the only way the node learns the
    order is resting: it must not be skipped as 'closed on the stream'."""
    state = LiveState()
    item, t = _order_item()
    state.on_order(_order_at(item, "Untriggered", t))
    state.on_order(_order_at(item, "Triggered", t + 1_000))
    assert state.snapshot().open_orders == {}
    resting = _order_at(item, "New", t + 1_000)
    state.on_reseed(_reseed((resting,), now_utc() + timedelta(seconds=1)))
    assert state.snapshot().open_orders == {resting.order_id: resting}


def test_a_reseed_never_reopens_an_order_the_stream_saw_filled():
    state = LiveState()
    item, t = _order_item()
    state.on_order(_order_at(item, "Filled", t + 2_000))
    stale_read = _order_at(item, "New", t + 1_000)
    state.on_reseed(_reseed((stale_read,), now_utc() - timedelta(seconds=1)))
    assert state.snapshot().open_orders == {}
