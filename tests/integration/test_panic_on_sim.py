"""Closes, panics and reconciliation against the simulator: real gateway, real pybit, the sim's
fault switches, and the sim's own order log as the witness of what happened in which order."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from actors.closing import ClosePolicy, Closer, Flattener
from actors.reconcile import Reconciler
from infra.bybit import Lane, OrderRefused, OrderRequest, OrderType, new_order_link_id
from messages.commands import CloseOutcome
from messages.queries import StateSnapshot
from messages.types import Side
from tests.helpers import wait_until
from tests.integration.test_gateway_orders import make_gateway

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

PRICES = {"BTCUSDT": Decimal("60000"), "ETHUSDT": Decimal("3000"), "SOLUSDT": Decimal("1.2")}
QTY = {"BTCUSDT": Decimal("0.01"), "ETHUSDT": Decimal("0.1"), "SOLUSDT": Decimal("10")}
POLICY = ClosePolicy(attempts=4, deadline_s=10, backoff_initial_s=0.05, backoff_max_s=0.3, fill_timeout_s=3)
REFUSED = 110007  # "ab not enough for new order": a plain refusal (nothing created)


@pytest.fixture
def venue(sim_factory, sim_creds):
    sim = sim_factory(symbols=list(PRICES))
    for symbol, price in PRICES.items():
        sim.set_price(symbol, price)
    gateway = make_gateway(sim, sim_creds)
    yield sim, gateway
    gateway.close()


def open_with_stops(gateway, symbol: str, side: Side) -> None:
    price = PRICES[symbol]
    up, down = price * Decimal("1.05"), price * Decimal("0.95")
    gateway.create_order(OrderRequest(
        symbol=symbol, side=side, order_type=OrderType.MARKET, qty=QTY[symbol], reference_price=price,
        order_link_id=new_order_link_id("t"),
        take_profit=up if side is Side.BUY else down, stop_loss=down if side is Side.BUY else up,
    ))
    stops = {o.stop_order_type for o in gateway.get_open_orders(symbol) if o.is_conditional}
    assert stops == {"TakeProfit", "StopLoss"} and gateway.get_position(symbol).is_open


def stops_of(gateway, symbol: str) -> set[str]:
    return {o.stop_order_type for o in gateway.get_open_orders(symbol) if o.is_conditional}


def unprotected_moments(order_log: list[dict]) -> list[dict]:
    """A TP/SL that ended by the user's hand while its position was still open: a position without its stop."""
    return [e for e in order_log if e["stop_order_type"] in ("TakeProfit", "StopLoss")
            and e["event"] in ("Cancelled", "Deactivated") and e["position_size"] > 0]


def test_a_close_whose_order_fails_leaves_tp_and_sl_in_place(venue, events):
    sim, gateway = venue
    open_with_stops(gateway, "BTCUSDT", Side.BUY)
    sim.faults.fail_next_order_creates(n=50, ret_code=REFUSED, ret_msg="ab not enough for new order")
    result = Closer(gateway.on_lane(Lane.PANIC), POLICY).close_position("BTCUSDT", "test", "sig-close-1")
    assert result.outcome is CloseOutcome.FAILED and str(REFUSED) in result.error
    sim.faults.clear()
    assert stops_of(gateway, "BTCUSDT") == {"TakeProfit", "StopLoss"}
    assert gateway.get_position("BTCUSDT").size == QTY["BTCUSDT"]
    log = sim.order_log()
    assert unprotected_moments(log) == []
    assert not [e for e in log if e["reduce_only"] and e["stop_order_type"] == ""]  # no close ever reached the book
    assert [e["level"] for e in events() if e["event"] == "close.failed"] == ["error"]


def test_a_close_that_fills_ends_flat_with_the_venues_fill_price(venue):
    sim, gateway = venue
    open_with_stops(gateway, "ETHUSDT", Side.SELL)
    sim.faults.zero_avg_price_next_market_order(queries=5)  # DATA-021: avgPrice "0" on create and reads
    result = Closer(gateway.on_lane(Lane.PANIC), POLICY).close_position("ETHUSDT", "test", "sig-close-2")
    assert result.outcome is CloseOutcome.CLOSED and result.closed_qty == QTY["ETHUSDT"]
    executions = [e for e in gateway.get_executions(symbol="ETHUSDT") if e.order_id == result.order_id]
    assert executions and result.avg_price == executions[0].exec_price
    assert gateway.get_position("ETHUSDT").size == 0 and stops_of(gateway, "ETHUSDT") == set()
    log = sim.order_log()
    close_filled = next(e["n"] for e in log if e["order_id"] == result.order_id and e["event"] == "Filled")
    assert all(e["n"] > close_filled for e in log if e["stop_order_type"] in ("TakeProfit", "StopLoss")
               and e["event"] != "created")
    assert unprotected_moments(log) == []


def test_panic_with_three_positions_and_a_failing_first_close_ends_flat_and_never_unprotected(venue, events):
    sim, gateway = venue
    for symbol, side in (("BTCUSDT", Side.BUY), ("ETHUSDT", Side.SELL), ("SOLUSDT", Side.BUY)):
        open_with_stops(gateway, symbol, side)
    # A resting entry that is not a stop: it goes in the "cancel the rest" step.
    gateway.create_order(OrderRequest(symbol="BTCUSDT", side=Side.BUY, order_type=OrderType.LIMIT, qty=Decimal("0.01"),
                                      price=Decimal("57000"), order_link_id=new_order_link_id("t")))
    sim.faults.fail_next_order_creates(n=1, ret_code=REFUSED, ret_msg="ab not enough for new order")
    report = Flattener(gateway.on_lane(Lane.PANIC), list(PRICES), POLICY, deadline_s=30).run("test")
    assert report.flat, report
    assert sorted(c.symbol for c in report.closed if c.outcome is CloseOutcome.CLOSED) == sorted(PRICES)
    assert report.still_open_positions == () and report.still_open_orders == ()
    assert all(gateway.get_position(s).size == 0 for s in PRICES)
    assert gateway.get_open_orders() == []
    log = sim.order_log()
    assert unprotected_moments(log) == []
    for symbol in PRICES:
        close = next(e["n"] for e in log if e["symbol"] == symbol and e["reduce_only"] and e["stop_order_type"] == ""
                     and e["event"] == "Filled")
        ended = [e["n"] for e in log if e["symbol"] == symbol and e["stop_order_type"] in ("TakeProfit", "StopLoss")
                 and e["event"] != "created"]
        assert ended and min(ended) > close, symbol
    assert any(e["event"] == "close.retry" for e in events())  # the refused first close was retried
    assert [e["flat"] for e in events() if e["event"] == "panic.report"] == [True]


def test_an_empty_position_list_cancels_nothing(venue, events):
    sim, gateway = venue
    open_with_stops(gateway, "BTCUSDT", Side.BUY)
    orders = gateway.get_open_orders()
    # The worst case: the venue's list comes back empty AND the stream is wrong too.
    flat_stream = StateSnapshot(tickers={}, klines={}, bars={}, wallet=None, positions={}, open_orders={
        o.order_id: o for o in orders}, recent_executions=(), received_at={}, taken_at=0.0)
    sim.faults.empty_position_list()
    result = Reconciler(gateway).run(flat_stream)
    sim.faults.clear()
    assert result.cancelled == [] and len(result.kept) == 2
    assert stops_of(gateway, "BTCUSDT") == {"TakeProfit", "StopLoss"}
    assert not [e for e in sim.order_log() if e["event"] in ("Cancelled", "Deactivated")]
    assert [e for e in events() if e["event"] == "reconcile.orphan_kept"]


def test_a_stop_moves_in_place_and_the_position_is_never_without_it(venue):
    sim, gateway = venue
    open_with_stops(gateway, "BTCUSDT", Side.BUY)
    before = {o.stop_order_type: o for o in gateway.get_open_orders("BTCUSDT") if o.is_conditional}
    closer = Closer(gateway.on_lane(Lane.PANIC), POLICY)
    assert closer.move_stop("BTCUSDT", stop_loss=Decimal("58500"))
    after = {o.stop_order_type: o for o in gateway.get_open_orders("BTCUSDT") if o.is_conditional}
    assert after["StopLoss"].order_id == before["StopLoss"].order_id  # amended, not replaced
    assert after["StopLoss"].trigger_price == Decimal("58500")
    assert gateway.get_position("BTCUSDT").stop_loss == Decimal("58500")
    log = sim.order_log()
    assert not [e for e in log if e["event"] in ("Cancelled", "Deactivated")]
    assert [e["stop_order_type"] for e in log if e["event"] == "created" and e["stop_order_type"]] == [
        "TakeProfit", "StopLoss"]


def test_a_panic_never_reports_flat_while_an_entry_create_is_still_on_the_wire(sim_factory, sim_creds, events):
    """An entry that passed its checks just before the panic halted trading was on the wire while
    the panic read the account: flat, no order - "flat" was reported, and a moment later the
    entry opened a position. The panic now refuses new entries while it runs, waits for the ones
    in flight before it verifies, and closes what they opened."""
    sim = sim_factory(symbols=list(PRICES))
    for symbol, price in PRICES.items():
        sim.set_price(symbol, price)
    gateway = make_gateway(sim, sim_creds, rest_timeout_s=Decimal("5"))
    try:
        sim.faults.delay_responses(1.2, count=1, path="/v5/order/create")
        entry = OrderRequest(symbol="BTCUSDT", side=Side.BUY, order_type=OrderType.MARKET, qty=QTY["BTCUSDT"],
                             reference_price=PRICES["BTCUSDT"], order_link_id=new_order_link_id("t"),
                             take_profit=Decimal("63000"), stop_loss=Decimal("57000"))
        outcome: dict[str, object] = {}

        def send() -> None:
            try:
                outcome["ack"] = gateway.create_order(entry)
            except Exception as exc:  # noqa: BLE001 - the test reports it below
                outcome["error"] = exc

        sender = threading.Thread(target=send, name="entry-in-flight", daemon=True)
        sender.start()
        wait_until(lambda: sim.faults.state.delay.count == 0, timeout=5, what="the entry create reached the venue")
        flattener = Flattener(gateway.on_lane(Lane.PANIC), list(PRICES), POLICY, deadline_s=30)
        late = OrderRequest(symbol="ETHUSDT", side=Side.SELL, order_type=OrderType.MARKET, qty=QTY["ETHUSDT"],
                            reference_price=PRICES["ETHUSDT"], order_link_id=new_order_link_id("t"))
        refused: list[Exception] = []
        real_close_all = flattener._close_all

        def close_all_and_try_an_entry(*args, **kwargs):  # an entry sent while the panic runs (once)
            if not refused:
                try:
                    gateway.create_order(late)
                except OrderRefused as exc:
                    refused.append(exc)
            return real_close_all(*args, **kwargs)

        flattener._close_all = close_all_and_try_an_entry
        report = flattener.run("test")
        sender.join(timeout=10)
        assert "ack" in outcome, outcome
        assert report.flat, report
        assert gateway.get_position("BTCUSDT").size == 0 and gateway.get_open_orders() == []
        assert [e.reason for e in refused] == ["entries_halted"]
        assert gateway.get_position("ETHUSDT").size == 0
        assert unprotected_moments(sim.order_log()) == []
        # After the panic the gateway takes entries again: the trading state is what keeps them out.
        gateway.create_order(late.model_copy(update={"order_link_id": new_order_link_id("t")}))
        assert gateway.get_position("ETHUSDT").is_open
    finally:
        gateway.close()
