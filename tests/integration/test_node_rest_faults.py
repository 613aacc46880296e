"""The simulator's remaining fault switches pulled against the whole node, not a bare client.

`http_error`, `delay_responses` and `rate_limit_randomly` hit the node's REST path
while it trades (its actor tree, the real gateway, real Risk on a real DuckDB
file: `start_node` of test_trading_path_sim); `history_hole` hits the DbWriter's
start-up catch-up; `inject_frame` puts a closed bar the venue should never send
into the node's live public socket. The other switches are pulled against the
node elsewhere (failover, live state, panic, chaos). What each test holds the
node to: nothing lost, nothing doubled, no bad data stored, and an outcome
that says what happened.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from actors.base import Directory, Role
from actors.supervisor import Supervisor
from infra.bybit import Gateway
from actors.tree import default_children
from infra.config import load_config
from infra.store import BarRange, HistoryStore
from messages.commands import Signal
from messages.control import Ping
from messages.queries import GetHealth, GetSnapshot
from messages.trading import ExecutionOutcome, GetExecution
from tests.helpers import wait_until
from tests.integration.conftest import SIM_KEY, SIM_SECRET
from tests.integration.test_trading_path_sim import final, orders_with_link, send, start_node, wait_seeded

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

MIN = 60_000


@pytest.fixture
def trading_node(sim, write_config, events):
    handles, stop = start_node(sim, write_config)
    wait_seeded(handles[0], events)
    yield handles
    stop()


def _links_with_more_than_one_order(sim) -> list[str]:
    links = sim.call(lambda ex: [o.link_id for o in ex.account.orders.values() if o.link_id])
    return sorted({link for link in links if links.count(link) > 1})


def test_a_5xx_on_the_order_create_is_an_unknown_outcome_and_the_resend_makes_exactly_one_order(
        sim, trading_node, events):
    directory, gateway, _, _ = trading_node
    sim.faults.http_error(503, count=1, path="/v5/order/create")
    signal = Signal(signal_id="nf-5xx-1", symbol="BTCUSDT", direction="long", qty=Decimal("0.01"))
    assert send(directory, signal).outcome is ExecutionOutcome.PENDING  # sent: the create is on the wire
    first = final(directory, "nf-5xx-1")
    # The venue's 503 says nothing about the order: the node looked it up by its orderLinkId and
    # did not find it, and says so instead of guessing either way.
    assert first.outcome is ExecutionOutcome.UNKNOWN and "re-send" in first.reason, first
    assert orders_with_link(sim, first.order_link_id) == []
    assert any(e["event"] == "order.outcome_unknown" and e.get("signal_id") == "nf-5xx-1" for e in events())
    again = send(directory, signal)  # what order.outcome_unknown tells the operator to do
    assert again.order_link_id == first.order_link_id
    assert final(directory, "nf-5xx-1").outcome is ExecutionOutcome.FILLED
    assert len(orders_with_link(sim, first.order_link_id)) == 1
    pos = gateway.get_position("BTCUSDT")
    assert pos.size == Decimal("0.01") and pos.stop_loss and pos.take_profit


def test_the_executor_keeps_answering_while_an_entrys_create_hangs_on_the_venue(sim, trading_node, events):
    # The create used to be made in the Executor's mailbox: until the venue answered (or the
    # gateway gave up and looked the order up), nothing else reached the Executor, a FLAT included.
    directory, _, _, _ = trading_node
    sim.faults.timeout_next_order_create(n=1, hold_s=3.0)  # accepted, its answer held past the 0.5 s timeout
    sent = send(directory, Signal(signal_id="nf-hang-1", symbol="BTCUSDT", direction="long", qty=Decimal("0.01")))
    assert sent.outcome is ExecutionOutcome.PENDING and sent.order_id is None, sent
    during = directory.get(Role.EXECUTOR).ask(GetExecution(signal_id="nf-hang-1"), timeout=5)
    assert during.outcome is ExecutionOutcome.PENDING and during.order_id is None, during  # the create still out
    result = final(directory, "nf-hang-1")
    assert result.outcome is ExecutionOutcome.FILLED and result.order_id
    assert len(orders_with_link(sim, result.order_link_id)) == 1
    assert any(e["event"] == "gateway.order_outcome_unknown" for e in events())  # it did time out, then was found


def test_a_slow_venue_still_fills_one_order_and_closes_before_it_cancels_the_stops(sim, trading_node):
    directory, gateway, _, _ = trading_node
    sim.faults.delay_responses(0.3, count=10_000)  # every REST answer, below the gateway's 0.5 s timeout
    entry = send(directory, Signal(signal_id="nf-slow-1", symbol="BTCUSDT", direction="long", qty=Decimal("0.01")))
    assert final(directory, "nf-slow-1").outcome is ExecutionOutcome.FILLED
    assert gateway.get_position("BTCUSDT").stop_loss
    send(directory, Signal(signal_id="nf-slow-2", symbol="BTCUSDT", direction="flat"))
    assert final(directory, "nf-slow-2").outcome is ExecutionOutcome.CLOSED
    left = sim.call(lambda ex: ex.faults.state.delay.count)
    sim.faults.clear()
    assert left < 10_000 - 4  # the delay was really in the path: the create, its lookups, the close
    assert gateway.get_position("BTCUSDT").size == 0
    assert len(orders_with_link(sim, entry.order_link_id)) == 1
    assert gateway.get_open_orders("BTCUSDT") == []  # its TP/SL went with the position, after the close


def test_random_rate_limits_never_double_an_order_nor_strip_a_stop_and_the_node_recovers(sim, trading_node, events):
    directory, gateway, _, _ = trading_node
    sim.faults.rate_limit_randomly(0.4, seed=11)
    outcomes = {}
    for n in range(8):
        sid = f"nf-rl-{n}"
        body = {"direction": "long", "qty": Decimal("0.01")} if n % 2 == 0 else {"direction": "flat"}
        send(directory, Signal(signal_id=sid, symbol="BTCUSDT", **body))
        result = final(directory, sid, timeout=40)
        outcomes[sid] = result.outcome
        # An entry refused by a 10006 was never placed: REJECTED says so, naming the venue's code.
        if result.outcome is ExecutionOutcome.REJECTED:
            assert "10006" in result.reason and orders_with_link(sim, result.order_link_id) == []
        pos = gateway.get_position("BTCUSDT")
        if pos.size:  # whatever the storm did, an open position keeps its stop
            assert pos.stop_loss, (sid, result)
    sim.faults.clear()
    # ~30 private requests at 0.4: the storm really refused some (odds of none: about 1e-7).
    assert any("10006" in json.dumps(e) for e in events())
    assert _links_with_more_than_one_order(sim) == []
    assert set(outcomes.values()) <= {ExecutionOutcome.FILLED, ExecutionOutcome.REJECTED, ExecutionOutcome.CLOSED,
                                      ExecutionOutcome.ALREADY_FLAT, ExecutionOutcome.FAILED}, outcomes
    # After the storm the node trades normally again and ends flat.
    send(directory, Signal(signal_id="nf-rl-end", symbol="BTCUSDT", direction="flat"))
    assert final(directory, "nf-rl-end").outcome in (ExecutionOutcome.CLOSED, ExecutionOutcome.ALREADY_FLAT)
    assert gateway.get_position("BTCUSDT").size == 0


def _whole_node(sim, write_config, catch_up_days: int):
    app = load_config(write_config(
        "symbols:\n  BTCUSDT:\n    intervals: ['1']\n"
        f"db_writer:\n  catch_up_days: {catch_up_days}\n"
        f"sim:\n  api_key: {SIM_KEY}\n  api_secret: {SIM_SECRET}\n"
    ))
    gateway = Gateway.from_config(app, sim.urls)
    directory = Directory()
    supervisor = Supervisor.start(app, directory, default_children(), urls=sim.urls, gateway=gateway)
    supervisor.ask(Ping(), timeout=30)

    def stop() -> None:
        supervisor.stop(block=True, timeout=15)
        gateway.close()

    return app, directory, stop


def test_a_hole_in_the_venues_history_is_recorded_by_the_start_up_catch_up_not_refetched(
        sim, write_config, events):
    now = sim.clock.now_ms()
    hole = BarRange(now - 6 * 60 * MIN, now - 6 * 60 * MIN + 30 * MIN)
    sim.faults.history_hole("BTCUSDT", hole.start_ms, hole.end_ms - 1, interval="1")  # the sim's end is inclusive
    app, directory, stop = _whole_node(sim, write_config, catch_up_days=1)
    try:
        wait_until(lambda: any(e["event"] == "db.catch_up" for e in events()), timeout=60, what="db.catch_up")
    finally:
        stop()
    caught_up = next(e for e in events() if e["event"] == "db.catch_up")
    assert caught_up["level"] == "info" and "failed" not in json.dumps(caught_up["series"]), caught_up
    with HistoryStore.for_node(app.node).session() as s:
        assert s.venue_holes("BTCUSDT", "1") == [hole]
        assert s.bars("BTCUSDT", "1", hole) == []
        stored = s.series_info("BTCUSDT", "1")
        span = BarRange(int(stored.first_open.timestamp() * 1000), now - MIN)
        assert span.start_ms <= now - 23 * 60 * MIN  # the catch-up reached a day back
        assert s.fillable_gaps("BTCUSDT", "1", span) == []  # every other bar of the day is there


def test_a_closed_bar_the_venue_should_never_send_is_rejected_counted_and_not_stored(sim, write_config, events):
    app, directory, stop = _whole_node(sim, write_config, catch_up_days=0)
    try:
        store = directory.get(Role.STATE_STORE)
        wait_until(lambda: store.ask(GetSnapshot(), timeout=5).tickers.get("BTCUSDT"), timeout=10, what="ticker")
        minute = sim.clock.now_ms() // MIN * MIN
        bogus = {"start": minute, "end": minute + MIN - 1, "interval": "1", "open": "60000", "close": "60010",
                 "high": "59000", "low": "61000", "volume": "1", "turnover": "60000", "confirm": True,
                 "timestamp": minute + MIN}
        before = store.ask(GetHealth(), timeout=5).streams["kline.1.BTCUSDT"].rejected
        sent = sim.faults.inject_frame("public", json.dumps(
            {"topic": "kline.1.BTCUSDT", "type": "snapshot", "ts": minute + MIN, "data": [bogus]}))
        assert sent == 1
        wait_until(lambda: store.ask(GetHealth(), timeout=5).streams["kline.1.BTCUSDT"].rejected > before,
                   timeout=10, what="the bogus bar counted as rejected on its stream")
        rejected = [e for e in events() if "inconsistent bar" in json.dumps(e)]
        assert rejected and rejected[0]["level"] == "warning", rejected
        assert [b for b in store.ask(GetSnapshot(), timeout=5).bars.get(("BTCUSDT", "1"), ()) if b.open_ms == minute] == []
        sim.clock.advance(60)  # the venue's real bar for that minute closes
        real = wait_until(
            lambda: [b for b in store.ask(GetSnapshot(), timeout=5).bars.get(("BTCUSDT", "1"), ())
                     if b.open_ms == minute], timeout=10, what="the real bar of that minute")
        assert real[0].high >= real[0].low and real[0].high != Decimal("59000")
        wait_until(lambda: any(e["event"] == "db.flush" for e in events()), timeout=10, what="db.flush")
    finally:
        stop()
    with HistoryStore.for_node(app.node).session() as s:
        [stored] = s.bars("BTCUSDT", "1", BarRange(minute, minute + MIN))
        assert stored.high == real[0].high and stored.low == real[0].low
