"""Order creation against a scripted venue: rounding, refusals, and the three outcomes."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest

from infra.bybit import (
    Lane,
    OrderRefused,
    OrderRequest,
    OrderType,
    OutcomeUnknown,
    RateLimited,
    Rejected,
    Resolution,
    order_link_id,
)
from infra.bybit.testing import Reply, ScriptedVenue, envelope, instrument_row, limit_headers, serve_instruments
from messages.types import Side
from tests.unit.test_gateway_errors import make_gateway

pytestmark = pytest.mark.timeout(30)


def order_row(link_id: str, *, order_id: str = "oid-1", status: str = "New", symbol: str = "BTCUSDT") -> dict:
    return {
        "orderId": order_id,
        "orderLinkId": link_id,
        "symbol": symbol,
        "side": "Buy",
        "orderType": "Market",
        "orderStatus": status,
        "price": "0",
        "qty": "0.010",
        "avgPrice": "",
        "cumExecQty": "0",
        "leavesQty": "0.010",
        "reduceOnly": False,
        "closeOnTrigger": False,
        "stopOrderType": "",
        "positionIdx": 0,
        "createdTime": str(int(time.time() * 1000)),
        "updatedTime": str(int(time.time() * 1000)),
    }


class Book:
    """The scripted venue's memory of orders, so lookups can find what a create placed."""

    def __init__(self, venue: ScriptedVenue):
        self.orders: dict[str, dict] = {}
        self.lock = threading.Lock()
        venue.on("GET", "/v5/order/realtime", self._realtime)
        venue.on("GET", "/v5/order/history", lambda req: Reply(body=envelope({"list": [], "nextPageCursor": ""})))

    def place(self, link_id: str, **kw) -> dict:
        with self.lock:
            row = order_row(link_id, **kw)
            self.orders[link_id] = row
            return row

    def _realtime(self, req) -> Reply:
        with self.lock:
            link = req.query.get("orderLinkId")
            rows = [r for r in self.orders.values() if link is None or r["orderLinkId"] == link]
            open_only = req.query.get("openOnly", "0") == "0"
            rows = [r for r in rows if (r["orderStatus"] in ("New", "PartiallyFilled", "Untriggered")) == open_only]
        return Reply(body=envelope({"list": rows, "nextPageCursor": ""}))


@pytest.fixture
def venue():
    with ScriptedVenue() as v:
        serve_instruments(v, instrument_row("BTCUSDT"), instrument_row("ETHUSDT", tick="0.01", step="0.01", min_qty="0.01"))
        yield v


@pytest.fixture
def gateway(venue):
    gw = make_gateway(venue.urls, order_lookup_window_s=Decimal("1"))
    yield gw
    gw.close()


def market_buy(qty="0.01", link=None, **kw) -> OrderRequest:
    return OrderRequest(
        symbol="BTCUSDT",
        side=Side.BUY,
        order_type=OrderType.MARKET,
        qty=Decimal(qty),
        reference_price=Decimal("60000"),
        order_link_id=link or order_link_id("test", qty, time.monotonic_ns()),
        **kw,
    )


def test_accepted_order_is_rounded_to_step_and_tick(venue, gateway):
    venue.on("POST", "/v5/order/create", lambda req: Reply(body=envelope({"orderId": "o-1", "orderLinkId": req.body["orderLinkId"]})))
    req = OrderRequest(
        symbol="BTCUSDT",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        qty=Decimal("0.0129"),
        price=Decimal("60000.17"),
        take_profit=Decimal("65000.06"),
        stop_loss=Decimal("55000.04"),
        order_link_id="ord-round-1",
    )
    ack = gateway.create_order(req)
    assert ack.resolution is Resolution.ACKNOWLEDGED and ack.order_id == "o-1"
    assert (ack.qty, ack.price) == (Decimal("0.012"), Decimal("60000.1"))
    body = venue.requests("/v5/order/create")[0].body
    assert body["qty"] == "0.012"  # down to the 0.001 step, never up
    assert body["price"] == "60000.1"  # a buy rounds down to the 0.10 tick
    assert body["takeProfit"] == "65000.1" and body["stopLoss"] == "55000"
    assert body["positionIdx"] == 0 and body["orderLinkId"] == "ord-round-1" and body["reduceOnly"] is False


def test_sell_limit_rounds_up(venue, gateway):
    venue.on("POST", "/v5/order/create", lambda req: Reply(body=envelope({"orderId": "o-2", "orderLinkId": req.body["orderLinkId"]})))
    gateway.create_order(
        OrderRequest(symbol="ETHUSDT", side=Side.SELL, order_type=OrderType.LIMIT, qty=Decimal("1.009"), price=Decimal("3000.001"), order_link_id="ord-sell")
    )
    body = venue.requests("/v5/order/create")[0].body
    assert (body["qty"], body["price"]) == ("1", "3000.01")


@pytest.mark.parametrize(
    ("req", "reason"),
    [
        (lambda: market_buy("0.0009"), "qty_below_minimum"),
        # 0.001 BTC x 60000 = 60 USDT is fine; 0.001 x 1000 = 1 USDT is below the 5 USDT minimum.
        (lambda: OrderRequest(symbol="BTCUSDT", side=Side.BUY, order_type=OrderType.MARKET, qty=Decimal("0.001"), reference_price=Decimal("1000"), order_link_id="tiny"), "notional_below_minimum"),
        (lambda: market_buy("600"), "qty_above_maximum"),
        (lambda: OrderRequest(symbol="BTCUSDT", side=Side.BUY, order_type=OrderType.LIMIT, qty=Decimal("0.01"), price=Decimal("0.01"), order_link_id="cheap"), "price_out_of_range"),
        (lambda: market_buy("0.01", take_profit=Decimal("50000.02"), stop_loss=Decimal("50000.03")), "tpsl_inverted"),
    ],
)
def test_refused_orders_never_leave_the_process(venue, gateway, req, reason):
    venue.on("POST", "/v5/order/create", Reply(body=envelope({"orderId": "should-not-happen"})))
    with pytest.raises(OrderRefused) as info:
        gateway.create_order(req())
    assert info.value.reason == reason
    assert venue.requests("/v5/order/create") == []


def test_reduce_only_close_below_min_notional_is_allowed(venue, gateway):
    venue.on("POST", "/v5/order/create", lambda req: Reply(body=envelope({"orderId": "o-3", "orderLinkId": req.body["orderLinkId"]})))
    req = OrderRequest(symbol="BTCUSDT", side=Side.SELL, order_type=OrderType.MARKET, qty=Decimal("0.001"), reduce_only=True, order_link_id="close-dust")
    assert gateway.create_order(req).reduce_only is True
    assert venue.requests("/v5/order/create")[0].body["reduceOnly"] is True


def test_market_order_that_can_open_needs_a_reference_price():
    with pytest.raises(ValueError, match="reference_price"):
        OrderRequest(symbol="BTCUSDT", side=Side.BUY, order_type=OrderType.MARKET, qty=Decimal("1"), order_link_id="x")


def test_create_that_times_out_after_acceptance_resolves_by_link_id(venue, gateway):
    book = Book(venue)

    def accept_then_hang(req):
        book.place(req.body["orderLinkId"], order_id="o-late")
        return Reply(body=envelope({"orderId": "o-late"}), delay_s=2)

    venue.on("POST", "/v5/order/create", accept_then_hang)
    ack = gateway.create_order(market_buy(link="late-1"))
    assert ack.resolution is Resolution.LOOKED_UP
    assert ack.order_id == "o-late" and ack.order is not None
    assert len(venue.requests("/v5/order/create")) == 1, "the gateway must not re-send a create itself"


def test_duplicate_link_id_resolves_to_the_existing_order(venue, gateway):
    book = Book(venue)
    book.place("dup-1", order_id="o-first", status="Filled")
    venue.on("POST", "/v5/order/create", Reply(body=envelope(ret_code=110072, ret_msg="OrderLinkedID is duplicate")))
    ack = gateway.create_order(market_buy(link="dup-1"))
    assert ack.resolution is Resolution.DUPLICATE
    assert ack.order_id == "o-first" and ack.order.order_status.value == "Filled"


def test_lost_create_that_never_shows_up_is_outcome_unknown(venue, gateway):
    Book(venue)
    venue.on("POST", "/v5/order/create", Reply(status=502, body="bad gateway"))
    started = time.monotonic()
    with pytest.raises(OutcomeUnknown) as info:
        gateway.create_order(market_buy(link="lost-1"))
    assert info.value.order_link_id == "lost-1"
    assert 0.9 < time.monotonic() - started < 10  # the 1 s lookup window, then it gives up
    assert len(venue.requests("/v5/order/create")) == 1


def test_an_accepted_create_whose_answer_does_not_parse_is_looked_up_not_called_unsent(venue, gateway):
    """retCode 0 with a result that is not an object: the venue accepted the order, but the answer was
    raised as MalformedResponse, which create_order treated as "not accepted: nothing was created"
    (gateway.order_not_sent) - the caller then saw a final rejection for an order that exists."""
    book = Book(venue)

    def accept_garbled(req):
        book.place(req.body["orderLinkId"], order_id="o-garbled")
        return Reply(body=envelope(["not", "an", "object"]))

    venue.on("POST", "/v5/order/create", accept_garbled)
    ack = gateway.create_order(market_buy(link="garbled-1"))
    assert ack.resolution is Resolution.LOOKED_UP and ack.order_id == "o-garbled"
    assert len(venue.requests("/v5/order/create")) == 1


def test_rate_limited_create_is_not_ambiguous(venue, gateway):
    Book(venue)
    venue.on("POST", "/v5/order/create", Reply(body=envelope(ret_code=10006, ret_msg="Too many visits!"), headers=limit_headers(10, 0, 300)))
    with pytest.raises(RateLimited):
        gateway.create_order(market_buy(link="rl-1"))
    # Definitely not placed: no lookup was spent on it.
    assert venue.requests("/v5/order/realtime") == []


def test_rejected_create_raises_with_the_code(venue, gateway):
    venue.on("POST", "/v5/order/create", Reply(body=envelope(ret_code=110007, ret_msg="ab not enough for new order")))
    with pytest.raises(Rejected) as info:
        gateway.create_order(market_buy(link="poor-1"))
    assert info.value.ret_code == 110007


def test_cancel_whose_first_answer_was_lost_is_confirmed_by_lookup(venue, gateway):
    book = Book(venue)
    book.place("c-1", order_id="o-c1")
    calls = {"n": 0}

    def cancel(req):
        calls["n"] += 1
        with book.lock:
            already = book.orders["c-1"]["orderStatus"] == "Cancelled"
            book.orders["c-1"]["orderStatus"] = "Cancelled"
        if calls["n"] == 1:
            return Reply(body=envelope({"orderId": "o-c1"}), delay_s=2)  # done, answer lost
        assert already
        return Reply(body=envelope(ret_code=110001, ret_msg="order not exists or too late to cancel"))

    venue.on("POST", "/v5/order/cancel", cancel)
    ack = gateway.cancel_order("BTCUSDT", order_link_id="c-1")
    assert ack.order_id == "o-c1"
    assert calls["n"] == 2


def test_panic_view_sends_everything_on_the_panic_lane(venue, gateway):
    venue.on("POST", "/v5/order/create", lambda req: Reply(body=envelope({"orderId": "o-p", "orderLinkId": req.body["orderLinkId"]})))
    panic = gateway.on_lane(Lane.PANIC)
    panic.create_order(OrderRequest(symbol="BTCUSDT", side=Side.SELL, order_type=OrderType.MARKET, qty=Decimal("0.01"), reduce_only=True, order_link_id="panic-1"))
    granted = gateway.stats()["granted"]
    # The instrument read and the create both rode the panic lane.
    assert granted["panic"] == 2 and granted["order"] == 0 and granted["query"] == 0


def test_order_link_ids_are_deterministic_and_valid():
    a = order_link_id("signal-42", "BTCUSDT", "entry")
    assert a == order_link_id("signal-42", "BTCUSDT", "entry")
    assert a != order_link_id("signal-42", "BTCUSDT", "exit")
    assert len(a) <= 36
