"""The trading path against the simulator: the node's actor tree, a real gateway, real Risk on a real DuckDB file.

The test opens the gate itself, at its owner: it tells Panic the data is
ready, so Panic goes ACTIVE once Risk has seeded and tells Risk and the
Executor, also in the run without a private socket where readiness would
rightly never come (the gate is tested in test_panic_actor and
test_example_path). Telling ACTIVE to Risk and the Executor directly would
not hold: Panic answers each Risk status with its own state. The market
reader is the node's LiveMarketReader over the StateStore: a fresh ticker
stream must cost no REST price read (`market.rest_fallback` never logged).
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from actors.base import Role
from actors.executor import Executor
from actors.supervisor import ChildSpec, Supervisor
from actors.tree import default_children
from actors.base import ActorContext, Directory
from infra.bybit import Gateway, order_link_id
from infra.config import ExchangeConfig, TradingMode, Venue, load_config
from infra.market_reader import LiveMarketReader
from messages.commands import Signal
from messages.control import Ping, ReadinessChanged, TradingState
from messages.queries import GetSnapshot, GetTradingState
from messages.trading import ExecutionOutcome, GetExecution
from tests.helpers import wait_until
from tests.integration.conftest import SIM_KEY, SIM_SECRET, to_the_wall_clock

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

PRICE = Decimal("60000")


def start_node(sim, write_config, *, without: tuple[Role, ...] = (), risk: str = ""):
    # The venue's clock with ours, as Bybit's is: a test begun at hh:mm:59.9x otherwise placed its
    # order more than a minute after the sim's execution time, and the REST fill was never found.
    to_the_wall_clock(sim)
    sim.set_price("BTCUSDT", PRICE)
    app = load_config(write_config(
        "symbols:\n  BTCUSDT:\n    intervals: ['1']\n"
        "db_writer:\n  catch_up_days: 0\n"
        f"risk:\n  fill_stream_wait_s: 1\n  fill_timeout_s: 10\n{risk}"
        f"sim:\n  api_key: {SIM_KEY}\n  api_secret: {SIM_SECRET}\n"
    ))
    gateway = Gateway.create(
        urls=sim.urls, credentials=app.credentials, venue=Venue.SIM, trading_mode=TradingMode.PAPER,
        live_confirmed=False,
        exchange=ExchangeConfig(rest_timeout_s=Decimal("0.5"), order_lookup_window_s=Decimal("4"),
                                retry_max_wait_s=Decimal("0.2")),
    )
    directory = Directory()
    reader = LiveMarketReader.from_config(app.node, lambda: directory.get(Role.STATE_STORE), gateway)
    children = [
        ChildSpec(role=s.role, start=(lambda ctx: Executor.start(ctx, reader=reader)) if s.role is Role.EXECUTOR
                  else s.start)
        for s in default_children() if s.role not in without
    ]
    supervisor = Supervisor.start(app, directory, children, urls=sim.urls, gateway=gateway)
    supervisor.ask(Ping(), timeout=30)
    # What the live-state work seeds at start: the wallet over REST.
    directory.tell(Role.STATE_STORE, gateway.get_wallet())
    wait_until(lambda: directory.get(Role.STATE_STORE).ask(GetSnapshot(), timeout=5).tickers.get("BTCUSDT"),
               timeout=10, what="BTC ticker in the StateStore")
    # Open the gate here, independent of the sockets (see the module docstring).
    directory.tell(Role.PANIC, ReadinessChanged(ready=True, reasons=("test: ready",)))
    ctx = ActorContext(config=app, directory=directory, urls=sim.urls, gateway=gateway)

    def stop() -> None:
        supervisor.stop(block=True, timeout=15)
        gateway.close()

    return (directory, gateway, reader, ctx), stop


@pytest.fixture
def node(sim, write_config, events):
    handles, stop = start_node(sim, write_config)
    yield handles
    stop()


def send(directory: Directory, signal: Signal):
    return directory.get(Role.EXECUTOR).ask(signal, timeout=10)


def final(directory: Directory, signal_id: str, timeout: float = 20):
    return wait_until(
        lambda: (r := directory.get(Role.EXECUTOR).ask(GetExecution(signal_id=signal_id), timeout=5)) and r.final and r,
        timeout=timeout, what=f"final result of {signal_id}",
    )


def orders_with_link(sim, link: str) -> list:
    return sim.call(lambda ex: [o for o in ex.account.orders.values() if o.link_id == link])


def wait_seeded(directory: Directory, events) -> None:
    wait_until(lambda: any(e["event"] == "risk.seeded" for e in events()), timeout=10, what="risk.seeded")
    # Panic answers only after its handler told Risk and the Executor: no signal can overtake ACTIVE.
    wait_until(lambda: directory.get(Role.PANIC).ask(GetTradingState(), timeout=5).state is TradingState.ACTIVE,
               timeout=10, what="Panic ACTIVE")


def test_a_signal_through_real_risk_fills_with_tp_sl_on_the_venue(sim, node, events):
    directory, gateway, reader, _ = node
    wait_seeded(directory, events)
    signal = Signal(signal_id="it-entry-1", symbol="BTCUSDT", direction="long", qty=Decimal("0.01"),
                    take_profit=Decimal("66000"), stop_loss=Decimal("57000"))
    placed = send(directory, signal)
    assert placed.outcome is ExecutionOutcome.PENDING, placed
    result = final(directory, "it-entry-1")
    assert result.outcome is ExecutionOutcome.FILLED, result
    assert result.filled_qty == Decimal("0.01") and result.avg_price is not None and result.reduce_only is False
    pos = gateway.get_position("BTCUSDT")
    assert pos.size == Decimal("0.01") and pos.take_profit == Decimal("66000") and pos.stop_loss == Decimal("57000")
    names = [e["event"] for e in events() if e.get("signal_id") == "it-entry-1"]
    for name in ("signal.received", "risk.allowed", "order.placed", "order.filled"):
        assert name in names, names
    assert names.index("risk.allowed") < names.index("order.placed") < names.index("order.filled")
    assert not [e for e in events() if e["event"] == "market.rest_fallback"]  # the stream's price, no REST


def test_a_create_that_timed_out_but_was_accepted_yields_exactly_one_order(sim, node, events):
    directory, gateway, reader, ctx = node
    wait_seeded(directory, events)
    sim.faults.timeout_next_order_create(n=1, hold_s=2.0)
    # Small enough that a second one would still pass Risk: only the orderLinkId stands in its way.
    signal = Signal(signal_id="it-timeout-1", symbol="BTCUSDT", direction="long", qty=Decimal("0.005"))
    link = order_link_id("it-timeout-1", "entry", prefix="x")
    placed = send(directory, signal)
    assert placed.outcome is ExecutionOutcome.PENDING, placed
    assert final(directory, "it-timeout-1").outcome is ExecutionOutcome.FILLED
    assert any(e["event"] == "gateway.order_outcome_unknown" for e in events())
    assert len(orders_with_link(sim, link)) == 1
    # The same signal again: the Executor remembers it.
    assert send(directory, signal).outcome is ExecutionOutcome.FILLED
    # A new Executor that has forgotten it (a restart): the orderLinkId still keeps it to one order.
    fresh = Executor.start(ctx, reader=reader)
    try:
        # No one tells it ACTIVE: it asks Panic for the state on start (before this signal, in its mailbox).
        again = fresh.ask(signal, timeout=10)
        assert again.outcome in (ExecutionOutcome.PENDING, ExecutionOutcome.FILLED), again
        wait_until(lambda: (r := fresh.ask(GetExecution(signal_id="it-timeout-1"), timeout=5)) and r.final, timeout=15)
    finally:
        fresh.stop()
    assert len(orders_with_link(sim, link)) == 1
    assert gateway.get_position("BTCUSDT").size == Decimal("0.005")
    assert any(e["event"] == "gateway.order_duplicate" for e in events())


def test_avg_price_zero_over_rest_takes_the_fill_price_from_the_venues_executions(sim, write_config, events):
    """No private stream: the fill is confirmed over REST, where the order says avgPrice 0 (DATA-021)."""
    (directory, gateway, _, _), stop = start_node(sim, write_config, without=(Role.WS_PRIVATE,))
    try:
        wait_seeded(directory, events)
        sim.faults.zero_avg_price_next_market_order(queries=50)
        send(directory, Signal(signal_id="it-zero-avg", symbol="BTCUSDT", direction="long", qty=Decimal("0.01")))
        result = final(directory, "it-zero-avg")
        assert result.outcome is ExecutionOutcome.FILLED, result
        link = order_link_id("it-zero-avg", "entry", prefix="x")
        venue = sim.call(lambda ex: [(Decimal(e.data["execPrice"]), Decimal(e.data["execQty"]))
                                     for e in ex.account.executions if e.data.get("orderLinkId") == link])
        assert venue, "the simulator recorded no execution"
        expected = sum(p * q for p, q in venue) / sum(q for _, q in venue)
        assert result.price_source == "executions"
        assert result.avg_price == expected
        order = gateway.get_order("BTCUSDT", order_link_id=link)
        assert order.avg_price is None  # the venue still says 0: the price did not come from the order
    finally:
        stop()
