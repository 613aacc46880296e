"""The gateway's order path against the simulator: real pybit, real sockets, the sim's fault switches."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from infra.bybit import (
    Gateway,
    MalformedResponse,
    OrderRefused,
    OrderRequest,
    OrderType,
    Resolution,
    new_order_link_id,
)
from infra.config import Credentials, ExchangeConfig, TradingMode, Venue
from messages.account import OrderStatus
from messages.types import Side

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PRICE = Decimal("60000")


def make_gateway(sim, creds: Credentials, **exchange) -> Gateway:
    settings = {
        "rest_timeout_s": Decimal("0.5"),
        "order_lookup_window_s": Decimal("3"),
        "retry_max_wait_s": Decimal("0.2"),
        **exchange,
    }
    return Gateway.create(
        urls=sim.urls,
        credentials=creds,
        venue=Venue.SIM,
        trading_mode=TradingMode.PAPER,
        live_confirmed=False,
        exchange=ExchangeConfig(**settings),
    )


@pytest.fixture
def gateway(sim, sim_creds):
    sim.set_price("BTCUSDT", PRICE)
    gw = make_gateway(sim, sim_creds)
    yield gw
    gw.close()


def resting_buy(link: str | None = None, qty: str = "0.010") -> OrderRequest:
    """A limit buy far below the market: it rests, so it can be counted and cancelled."""
    return OrderRequest(
        symbol="BTCUSDT",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        qty=Decimal(qty),
        price=PRICE * Decimal("0.95"),
        order_link_id=link or new_order_link_id("t"),
    )


def orders_with_link(gateway: Gateway, link: str) -> list:
    return [o for o in gateway.get_open_orders("BTCUSDT") if o.order_link_id == link]


def test_create_that_times_out_after_acceptance_resolves_to_exactly_one_order(sim, gateway):
    sim.faults.timeout_next_order_create(n=1, hold_s=2.0)
    req = resting_buy()
    started = time.monotonic()
    ack = gateway.create_order(req)
    assert ack.resolution is Resolution.LOOKED_UP
    assert ack.order is not None and ack.order.order_status is OrderStatus.NEW
    assert time.monotonic() - started < 10  # resolved by lookup, bounded
    # The caller retries, as an Executor would after an unknown outcome: still one order.
    again = gateway.create_order(req)
    assert again.resolution is Resolution.DUPLICATE
    assert again.order_id == ack.order_id
    assert [o.order_id for o in orders_with_link(gateway, req.order_link_id)] == [ack.order_id]


def test_duplicate_link_id_resolves_to_the_existing_order(gateway):
    req = resting_buy()
    first = gateway.create_order(req)
    assert first.resolution is Resolution.ACKNOWLEDGED
    second = gateway.create_order(req)
    assert second.resolution is Resolution.DUPLICATE and second.order_id == first.order_id
    assert len(orders_with_link(gateway, req.order_link_id)) == 1


def test_quantities_and_prices_reach_the_venue_rounded(gateway):
    req = OrderRequest(
        symbol="BTCUSDT",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        qty=Decimal("0.0129"),
        price=Decimal("57000.19"),
        order_link_id=new_order_link_id("r"),
    )
    gateway.create_order(req)
    (order,) = orders_with_link(gateway, req.order_link_id)
    inst = gateway.instrument("BTCUSDT")
    assert order.qty == inst.round_qty(Decimal("0.0129")) <= Decimal("0.0129")
    assert order.price == inst.round_limit_price(Decimal("57000.19"), Side.BUY) <= Decimal("57000.19")
    assert order.qty % inst.qty_step == 0 and order.price % inst.tick_size == 0


def test_below_minimum_order_never_leaves_the_process(gateway):
    inst = gateway.instrument("BTCUSDT")
    granted_before = gateway.stats()["granted"]["order"]
    with pytest.raises(OrderRefused) as info:
        gateway.create_order(resting_buy(qty=str(inst.min_qty / 2)))
    assert info.value.reason == "qty_below_minimum"
    assert gateway.stats()["granted"]["order"] == granted_before, "a request was admitted to the order lane"
    assert gateway.get_open_orders("BTCUSDT") == []


def test_market_order_fills_and_every_read_parses(sim, gateway):
    link = new_order_link_id("m")
    ack = gateway.create_order(
        OrderRequest(
            symbol="BTCUSDT",
            side=Side.BUY,
            order_type=OrderType.MARKET,
            qty=Decimal("0.01"),
            reference_price=PRICE,
            stop_loss=PRICE * Decimal("0.9"),
            order_link_id=link,
        )
    )
    assert ack.resolution is Resolution.ACKNOWLEDGED
    deadline = time.monotonic() + 5
    while (position := gateway.get_position("BTCUSDT")).size == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert position.size == Decimal("0.01") and position.side is Side.BUY and position.position_idx == 0
    assert gateway.get_wallet().total_equity > 0
    fills = [e for e in gateway.get_executions(symbol="BTCUSDT") if e.order_link_id == link]
    assert fills and sum(e.exec_qty for e in fills) == Decimal("0.01")
    assert gateway.get_order("BTCUSDT", order_link_id=link).order_status is OrderStatus.FILLED
    # Close it (reduce-only, so no notional check needed) and read the closed PnL.
    gateway.create_order(
        OrderRequest(symbol="BTCUSDT", side=Side.SELL, order_type=OrderType.MARKET, qty=Decimal("0.01"), reduce_only=True, order_link_id=new_order_link_id("c"))
    )
    deadline = time.monotonic() + 5
    while gateway.get_position("BTCUSDT").size != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gateway.get_position("BTCUSDT").size == 0
    assert any(p.symbol == "BTCUSDT" for p in gateway.get_closed_pnl(symbol="BTCUSDT"))
    assert gateway.get_open_positions() == []


def test_empty_position_answer_is_never_read_as_flat(sim, gateway):
    """DATA-019: the sim drops the rows although the position exists."""
    gateway.create_order(
        OrderRequest(symbol="BTCUSDT", side=Side.BUY, order_type=OrderType.MARKET, qty=Decimal("0.01"), reference_price=PRICE, order_link_id=new_order_link_id("e"))
    )
    sim.faults.empty_position_list(seconds=30)
    with pytest.raises(MalformedResponse):
        gateway.get_position("BTCUSDT")


def test_cancel_and_cancel_all(gateway):
    a, b, c = (gateway.create_order(resting_buy()) for _ in range(3))
    cancelled = gateway.cancel_order("BTCUSDT", order_link_id=a.order_link_id)
    assert cancelled.order_id == a.order_id
    assert gateway.get_order("BTCUSDT", order_link_id=a.order_link_id).order_status is OrderStatus.CANCELLED
    rest = gateway.cancel_all("BTCUSDT", order_filter="Order")
    assert {x.order_id for x in rest} == {b.order_id, c.order_id}
    assert gateway.get_open_orders("BTCUSDT") == []
