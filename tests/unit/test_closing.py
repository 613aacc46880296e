"""Close first, cancel after (DATA-018), the panic procedure (DATA-017) and reconciliation (DATA-019),
against a gateway double that records every call in order."""

from __future__ import annotations

from decimal import Decimal

import pytest

from actors.closing import ClosePolicy, Closer, Flattener
from actors.reconcile import Reconciler
from infra.bybit.errors import OrderRefused, RateLimited, Rejected
from infra.bybit.models import OrderAck, Resolution
from messages.account import Order
from messages.commands import CloseOutcome
from messages.queries import StateSnapshot
from tests.fake_gateway import FakeGateway, order, position

FAST = ClosePolicy(attempts=3, deadline_s=5, backoff_initial_s=0.001, backoff_max_s=0.002, fill_timeout_s=1)


def closer(gw: FakeGateway, policy: ClosePolicy = FAST) -> Closer:
    return Closer(gw, policy, sleep=lambda s: None)


def test_close_is_placed_before_any_conditional_is_cancelled(events):
    gw = FakeGateway()
    gw.open("BTCUSDT", "Buy", "0.5")
    gw.orders["BTC-stop-entry"] = order("BTCUSDT", "BTC-stop-entry", side="Buy", stop="Stop", reduce_only=False)
    result = closer(gw).close_position("BTCUSDT", "test", "sig-1")
    assert result.outcome is CloseOutcome.CLOSED and result.reduce_only
    assert result.closed_qty == Decimal("0.5") and result.avg_price == Decimal("101")
    names = gw.names()
    assert names.index("create_order") < names.index("cancel_order")
    create = next(c for c in gw.calls if c[0] == "create_order")
    assert create[1:] == ("BTCUSDT", "Sell", "0.5", True)  # reduce-only, the opposite side, the whole size
    assert ("cancel_order", "BTCUSDT", "BTC-stop-entry") in gw.calls  # the stop entry left after flat
    assert gw.stops("BTCUSDT") == [] and result.conditionals_cancelled == 1
    assert any(e["event"] == "close.done" and e["symbol"] == "BTCUSDT" for e in events())


@pytest.mark.parametrize("failure", [
    Rejected(110007, "ab not enough for new order"),
    RateLimited("retCode 10006: Too many visits!"),
    OrderRefused("instrument_not_trading", "BTCUSDT status is Settling"),
])
def test_a_failing_close_leaves_every_conditional_in_place(events, failure):
    gw = FakeGateway()
    gw.open("BTCUSDT", "Buy", "0.5")
    gw.fail_creates = [failure] * 10
    result = closer(gw).close_position("BTCUSDT", "test", "sig-2")
    assert result.outcome is CloseOutcome.FAILED and type(failure).__name__ in result.error
    assert not any(c[0] in ("cancel_all", "cancel_order") for c in gw.calls)
    assert {o.stop_order_type for o in gw.stops("BTCUSDT")} == {"TakeProfit", "StopLoss"}
    failed = [e for e in events() if e["event"] == "close.failed"]
    assert len(failed) == 1 and failed[0]["level"] == "error" and failed[0]["symbol"] == "BTCUSDT"
    attempts = sum(1 for c in gw.calls if c[0] == "create_order")
    assert attempts == (1 if isinstance(failure, OrderRefused) else FAST.attempts)  # refused in-process: no retry


def test_a_partial_fill_keeps_the_stops_and_closes_the_rest_on_retry():
    gw = FakeGateway()
    gw.open("BTCUSDT", "Buy", "1.0")
    gw.partial_fill["BTCUSDT"] = Decimal("0.4")
    seen_stops_after_partial = []
    original = gw.create_order

    def create(req):
        ack = original(req)
        seen_stops_after_partial.append(len(gw.stops("BTCUSDT")))
        return ack

    gw.create_order = create
    result = closer(gw).close_position("BTCUSDT", "test")
    assert result.outcome is CloseOutcome.CLOSED and result.closed_qty == Decimal("0.6")
    creates = [c for c in gw.calls if c[0] == "create_order"]
    assert [c[3] for c in creates] == ["1.0", "0.6"]  # the remainder, re-read from the position
    assert seen_stops_after_partial[0] == 2  # after the partial fill both stops were still there
    # The conditionals were looked up (to be cancelled) only after the last, completing close.
    assert gw.names().index("get_open_orders") > max(i for i, c in enumerate(gw.calls) if c[0] == "create_order")


def test_already_flat_places_nothing():
    gw = FakeGateway()
    result = closer(gw).close_position("ETHUSDT", "test")
    assert result.outcome is CloseOutcome.ALREADY_FLAT
    assert "create_order" not in gw.names() and "cancel_all" not in gw.names()


def test_a_failed_position_read_is_not_flat():
    gw = FakeGateway()
    gw.open("BTCUSDT", "Buy", "1")
    gw.fail_position_reads.add("BTCUSDT")
    result = closer(gw).close_position("BTCUSDT", "test")
    assert result.outcome is CloseOutcome.FAILED
    assert "create_order" not in gw.names() and len(gw.stops("BTCUSDT")) == 2


def test_stops_move_in_place_never_cancel_then_create():
    gw = FakeGateway()
    gw.open("BTCUSDT", "Buy", "1")
    assert closer(gw).move_stop("BTCUSDT", stop_loss=Decimal("95"))
    assert gw.calls == [("set_trading_stop", "BTCUSDT", (("stop_loss", "95"),))]


# --- the panic procedure -----------------------------------------------------------------------


def flattener(gw: FakeGateway, symbols=("BTCUSDT", "ETHUSDT", "SOLUSDT")) -> Flattener:
    return Flattener(gw, symbols, FAST, deadline_s=10, verify_rounds=3, max_workers=1, sleep=lambda s: None)


def test_panic_closes_first_then_cancels_then_verifies_flat(events):
    gw = FakeGateway()
    for sym in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        gw.open(sym, "Buy" if sym != "ETHUSDT" else "Sell", "2")
    gw.orders["resting"] = order("XRPUSDT", "resting", side="Buy", status="New", stop="", reduce_only=False)
    gw.fail_creates = [Rejected(10001, "first close refused")]
    report = flattener(gw).run("test")
    assert report.flat and report.time_to_flat_s is not None
    assert report.still_open_positions == () and report.still_open_orders == ()
    assert sorted(c.symbol for c in report.closed if c.outcome is CloseOutcome.CLOSED) == ["BTCUSDT", "ETHUSDT",
                                                                                            "SOLUSDT"]
    assert gw.orders == {}
    assert ("arm_dcp", 3) in gw.calls
    for sym in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        creates = [i for i, c in enumerate(gw.calls) if c[0] == "create_order" and c[1] == sym]
        lists = [i for i, c in enumerate(gw.calls) if c[0] == "get_open_orders" and c[1] == sym]
        cancels = [i for i, c in enumerate(gw.calls) if c[0] in ("cancel_all", "cancel_order") and c[1] == sym]
        assert creates and lists and max(creates) < min(lists), sym  # conditionals looked up after the close
        assert all(max(creates) < i for i in cancels), sym
    reports = [e for e in events() if e["event"] == "panic.report"]
    assert len(reports) == 1 and reports[0]["flat"] is True and len(reports[0]["closed"]) == 3


def test_panic_keeps_the_stops_of_a_position_it_could_not_close(events):
    gw = FakeGateway()
    gw.open("BTCUSDT", "Buy", "1")
    gw.open("ETHUSDT", "Buy", "1")
    gw.orders["resting"] = order("BTCUSDT", "resting", side="Buy", status="New", stop="", reduce_only=False)
    gw.fail_creates = [Rejected(110007, "refused")] * 100  # every close fails
    report = flattener(gw, ("BTCUSDT", "ETHUSDT")).run("test")
    assert not report.flat
    assert {p.split(":")[0] for p in report.still_open_positions} == {"BTCUSDT", "ETHUSDT"}
    assert len(gw.stops("BTCUSDT")) == 2 and len(gw.stops("ETHUSDT")) == 2
    assert "resting" not in gw.orders  # a plain resting order goes; the stops stay
    assert all(c[2] == "Order" for c in gw.calls if c[0] == "cancel_all")
    report_events = [e for e in events() if e["event"] == "panic.report"]
    assert len(report_events) == 1 and report_events[0]["level"] == "error"


def test_panic_finds_positions_an_empty_position_list_hides():
    gw = FakeGateway()
    gw.open("BTCUSDT", "Buy", "1")
    gw.empty_position_list = True
    report = flattener(gw, ("BTCUSDT",)).run("test")
    assert report.flat and [c.symbol for c in report.closed] == ["BTCUSDT"]


def test_panic_closes_what_an_in_flight_entry_left_behind():
    gw = FakeGateway()
    gw.open("BTCUSDT", "Buy", "1")
    original = gw.get_open_orders
    late = {"done": False}

    def get_open_orders(symbol=None, *, order_filter=None):
        if not late["done"]:  # an entry that was in flight fills right after the first close
            late["done"] = True
            gw.open("BTCUSDT", "Buy", "0.3", with_stops=False)
        return original(symbol, order_filter=order_filter)

    gw.get_open_orders = get_open_orders
    report = flattener(gw, ("BTCUSDT",)).run("test")
    assert report.flat and report.rounds == 2
    assert [str(c.closed_qty) for c in report.closed] == ["1", "0.3"]


def test_panic_never_claims_flat_when_a_read_fails():
    gw = FakeGateway()
    gw.fail_position_reads.add("BTCUSDT")
    report = flattener(gw, ("BTCUSDT",)).run("test")
    assert not report.flat and report.time_to_flat_s is None
    assert any("unknown" in p for p in report.still_open_positions)


# --- reconciliation ---------------------------------------------------------------------------


def snapshot(positions=(), orders=()) -> StateSnapshot:
    return StateSnapshot(
        tickers={}, klines={}, bars={}, wallet=None,
        positions={(p.symbol, 0): p for p in positions},
        open_orders={o.order_id: o for o in orders},
        recent_executions=(), received_at={}, taken_at=0.0,
    )


def orphan_setup() -> tuple[FakeGateway, list]:
    gw = FakeGateway()
    orphans = [order("BTCUSDT", "tp"), order("BTCUSDT", "sl")]
    gw.orders = {o.order_id: o for o in orphans}
    return gw, orphans


def test_an_orphan_is_cancelled_when_venue_and_stream_agree_the_position_is_flat(events):
    gw, orphans = orphan_setup()
    result = Reconciler(gw).run(snapshot([position("BTCUSDT", None, "0")], orphans))
    assert sorted(result.cancelled) == ["sl", "tp"] and gw.orders == {}
    assert [e for e in events() if e["event"] == "reconcile.orphan_cancelled"]


@pytest.mark.parametrize("fault", ["empty_list_and_failed_read", "failed_list_and_read", "stream_says_open",
                                   "stream_has_no_position", "no_snapshot"])
def test_an_empty_or_failed_answer_never_cancels(events, fault):
    gw, orphans = orphan_setup()
    stream = snapshot([position("BTCUSDT", None, "0")], orphans)
    if fault == "empty_list_and_failed_read":
        gw.open("BTCUSDT", "Buy", "1", with_stops=False)
        gw.empty_position_list = True
        gw.fail_position_reads.add("BTCUSDT")
        stream = snapshot([position("BTCUSDT", "Buy", "1")], orphans)
    elif fault == "failed_list_and_read":
        gw.fail_position_list = True
        gw.fail_position_reads.add("BTCUSDT")
    elif fault == "stream_says_open":
        stream = snapshot([position("BTCUSDT", "Buy", "1")], orphans)
    elif fault == "stream_has_no_position":
        stream = snapshot([], orphans)
    elif fault == "no_snapshot":
        stream = None
    result = Reconciler(gw).run(stream)
    assert result.cancelled == [] and "cancel_order" not in gw.names() and "cancel_all" not in gw.names()
    assert len(gw.orders) == 2
    assert [e for e in events() if e["event"] in ("reconcile.orphan_kept", "reconcile.failed")]


def test_disagreements_are_events():
    gw = FakeGateway()
    gw.open("BTCUSDT", "Buy", "1", with_stops=False)
    gw.orders["venue-only"] = order("BTCUSDT", "venue-only", status="New", stop="", reduce_only=False)
    stream_only = order("ETHUSDT", "stream-only", status="New", stop="", reduce_only=False)
    result = Reconciler(gw).run(snapshot([position("BTCUSDT", "Buy", "2")], [stream_only]))
    kinds = sorted(m["kind"] for m in result.mismatches)
    assert kinds == ["order_only_in_stream", "order_only_on_venue", "position_size"]
    assert result.cancelled == []


def test_a_filled_close_with_a_position_still_open_closes_the_remainder_without_waiting():
    gw = FakeGateway()
    gw.open("BTCUSDT", "Buy", "1.0")
    original = gw.create_order
    first = {"done": False}

    def create(req):
        ack = original(req)
        if not first["done"]:  # an entry in flight fills right after our (complete) close
            first["done"] = True
            gw.open("BTCUSDT", "Buy", "0.2", with_stops=False)
        return ack

    gw.create_order = create
    result = closer(gw).close_position("BTCUSDT", "test")
    assert result.outcome is CloseOutcome.CLOSED and result.closed_qty == Decimal("0.2")
    assert [c[3] for c in gw.calls if c[0] == "create_order"] == ["1.0", "0.2"]
    # Two looks at the filled order, not a spin until the fill timeout.
    assert sum(1 for c in gw.calls if c[0] == "get_position") <= 5


def test_an_opening_order_still_in_flight_at_the_deadline_is_never_reported_flat():
    gw = FakeGateway()
    gw.entries.admit("BTCUSDT", "x-stuck")  # an entry create that never comes back
    report = Flattener(gw, ("BTCUSDT",), FAST, deadline_s=0.3, verify_rounds=3, max_workers=1,
                       sleep=lambda s: None).run("test")
    assert not report.flat and report.time_to_flat_s is None
    assert "<unknown: an opening order was still in flight>" in report.still_open_positions
    assert any("still in flight on ['BTCUSDT']" in e for e in report.errors)
    gw.entries.done("x-stuck")


def test_opening_orders_are_refused_only_while_a_panic_runs():
    gate = FakeGateway().entries
    with gate.halted("panic: test"):
        with pytest.raises(OrderRefused) as refused:
            gate.admit("BTCUSDT", "x-1")
        assert refused.value.reason == "entries_halted"
    gate.admit("BTCUSDT", "x-2")
    assert gate.settle(0.05) == ({"BTCUSDT"}, False)
    gate.done("x-2")
    assert gate.settle(0.05) == (set(), True)


def test_a_close_beaten_by_the_stop_reports_what_its_order_filled_not_the_whole_position(events):
    """The stop-loss filled first, so the venue cancelled the reduce-only close with nothing filled.
    `cumExecQty` 0 is a Decimal zero, falsy: `cum_exec_qty or position.size` reported the whole
    position as closed by our order."""
    gw = FakeGateway()
    gw.open("BTCUSDT", "Buy", "0.5")

    def stop_fills_first(req):
        gw.calls.append(("create_order", req.symbol, req.side.value, str(req.qty), req.reduce_only))
        gw.positions["BTCUSDT"] = position("BTCUSDT", None, "0")
        gw._filled["close-x"] = Order.from_bybit({
            "orderId": "close-x", "orderLinkId": req.order_link_id, "symbol": "BTCUSDT", "side": "Sell",
            "orderType": "Market", "orderStatus": "Cancelled", "qty": str(req.qty), "cumExecQty": "0",
            "avgPrice": "", "reduceOnly": True, "createdTime": "1767225600000"})
        return OrderAck(symbol=req.symbol, order_id="close-x", order_link_id=req.order_link_id,
                        resolution=Resolution.ACKNOWLEDGED, qty=req.qty, reduce_only=True)

    gw.create_order = stop_fills_first
    result = closer(gw).close_position("BTCUSDT", "test", "sig-beaten")
    assert result.outcome is CloseOutcome.CLOSED  # flat is flat, whichever order made it so
    assert result.closed_qty == Decimal("0") and result.avg_price is None
    done = [e for e in events() if e["event"] == "close.done"]
    assert done[0]["closed_qty"] == "0"


def test_stops_of_a_position_an_entry_reopened_after_the_close_are_not_cancelled(events):
    """The close filled and the position read flat; then an entry that was already in flight filled,
    opening a new position with its own TP/SL. The conditional orders listed next were all cancelled
    as the closed position's leftovers - the new position's stops with them, leaving it naked."""
    gw = FakeGateway()
    gw.open("BTCUSDT", "Buy", "0.5")
    real_open_orders = gw.get_open_orders
    reopened = []

    def open_orders_after_a_late_entry(symbol=None, **kw):
        if symbol == "BTCUSDT" and not reopened and not gw.positions["BTCUSDT"].is_open:
            reopened.append(True)
            gw.open("BTCUSDT", "Buy", "0.2")  # the late entry's position and its own TP/SL
        return real_open_orders(symbol, **kw)

    gw.get_open_orders = open_orders_after_a_late_entry
    result = closer(gw).close_position("BTCUSDT", "test", "sig-late-entry")
    assert reopened
    assert result.outcome is CloseOutcome.CLOSED
    assert {o.stop_order_type for o in gw.stops("BTCUSDT")} == {"TakeProfit", "StopLoss"}
    assert not any(c[0] in ("cancel_order", "cancel_all") for c in gw.calls)
    assert result.conditionals_cancelled == 0 and "open again" in (result.error or "")
    assert any(e["event"] == "close.cancel_skipped" for e in events())
