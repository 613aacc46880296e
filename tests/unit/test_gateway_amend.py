"""Amendments, trailing stops and what a resolved order reports: the venue's truth, safe rounding."""

from __future__ import annotations

from decimal import Decimal

import pytest

from infra.bybit import OrderRefused, OrderRequest, OrderType, Resolution
from infra.bybit.testing import Reply, ScriptedVenue, envelope, instrument_row, serve_instruments
from messages.types import Side
from tests.unit.test_gateway_errors import make_gateway
from tests.unit.test_gateway_orders import Book

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def venue():
    with ScriptedVenue() as v:
        serve_instruments(v, instrument_row("BTCUSDT", tick="0.50"))
        yield v


@pytest.fixture
def gateway(venue):
    gw = make_gateway(venue.urls, order_lookup_window_s=Decimal("1"))
    yield gw
    gw.close()


@pytest.mark.parametrize(("side", "sent"), [(Side.BUY, "60000"), (Side.SELL, "60000.5")])
def test_an_amended_limit_price_never_rounds_to_a_worse_price(venue, gateway, side, sent):
    venue.on("POST", "/v5/order/amend", Reply(body=envelope({"orderId": "o-1", "orderLinkId": "l-1"})))
    gateway.amend_order("BTCUSDT", order_link_id="l-1", side=side, price=Decimal("60000.40"))
    assert venue.requests("/v5/order/amend")[0].body["price"] == sent


def test_amending_a_price_without_the_side_is_refused_before_sending(venue, gateway):
    with pytest.raises(ValueError, match="side"):
        gateway.amend_order("BTCUSDT", order_link_id="l-1", price=Decimal("60000"))
    assert venue.requests("/v5/order/amend") == []


def test_an_amend_ack_never_makes_up_an_order_id(venue, gateway):
    venue.on("POST", "/v5/order/amend", Reply(body=envelope({})))
    ack = gateway.amend_order("BTCUSDT", order_link_id="l-2", qty=Decimal("0.02"))
    assert ack.order_id is None and ack.order_link_id == "l-2"


def test_a_trailing_stop_is_a_distance_in_ticks(venue, gateway):
    venue.on("POST", "/v5/position/trading-stop", Reply(body=envelope({})))
    gateway.set_trading_stop("BTCUSDT", trailing_stop=Decimal("0.7"))
    assert venue.requests("/v5/position/trading-stop")[0].body["trailingStop"] == "0.5"
    with pytest.raises(OrderRefused, match="less than one tick"):
        gateway.set_trading_stop("BTCUSDT", trailing_stop=Decimal("0.2"))


def test_a_duplicate_link_id_reports_the_venues_order_not_the_request(venue, gateway):
    book = Book(venue)
    book.place("dup-1", order_id="existing")  # qty 0.010 already on the venue
    venue.on("POST", "/v5/order/create", Reply(body=envelope(ret_code=110072, ret_msg="OrderLinkedID is duplicate")))
    ack = gateway.create_order(OrderRequest(
        symbol="BTCUSDT", side=Side.BUY, order_type=OrderType.MARKET, qty=Decimal("0.05"),
        reference_price=Decimal("60000"), order_link_id="dup-1",
    ))
    assert ack.resolution is Resolution.DUPLICATE and ack.order_id == "existing"
    assert ack.qty == Decimal("0.010")  # what the venue holds, not the 0.05 this request asked for
