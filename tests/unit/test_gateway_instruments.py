"""Instrument rules from the documented instruments-info sample, and Decimal rounding."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from infra.bybit.errors import OrderRefused
from infra.bybit.instruments import Instrument, decimal_str
from messages.types import Side
from tests.conftest import SAMPLES


@pytest.fixture
def btc() -> Instrument:
    sample = json.loads((SAMPLES / "3.4-get-v5-market-instruments-info-1.json").read_text())
    return Instrument.from_bybit(sample["result"]["list"][0])


def test_parses_the_documented_sample(btc):
    assert (btc.symbol, btc.status, btc.is_trading) == ("BTCUSDT", "Trading", True)
    assert (btc.tick_size, btc.qty_step, btc.min_qty) == (Decimal("0.10"), Decimal("0.001"), Decimal("0.001"))
    assert (btc.max_qty, btc.max_market_qty, btc.min_notional) == (Decimal("1190.000"), Decimal("500.000"), Decimal("5"))
    assert btc.max_leverage == Decimal("100.00")


def test_quantity_rounds_down_to_the_step(btc):
    assert btc.round_qty(Decimal("0.0129")) == Decimal("0.012")
    assert btc.round_qty(Decimal("1.0000001")) == Decimal("1.000")
    assert btc.checked_qty(Decimal("0.0019"), market=True, reduce_only=False) == Decimal("0.001")


def test_limit_prices_round_to_the_safe_side(btc):
    assert btc.round_limit_price(Decimal("60000.19"), Side.BUY) == Decimal("60000.1")
    assert btc.round_limit_price(Decimal("60000.11"), Side.SELL) == Decimal("60000.2")
    assert btc.round_limit_price(Decimal("60000.10"), Side.SELL) == Decimal("60000.1")
    assert btc.round_trigger_price(Decimal("60000.15")) == Decimal("60000.2")
    assert btc.round_trigger_price(Decimal("60000.14")) == Decimal("60000.1")


def test_below_minimum_is_refused(btc):
    with pytest.raises(OrderRefused) as info:
        btc.checked_qty(Decimal("0.0009"), market=True, reduce_only=False)
    assert info.value.reason == "qty_below_minimum"
    with pytest.raises(OrderRefused) as info:
        btc.check_notional(Decimal("0.001"), Decimal("4999"))
    assert info.value.reason == "notional_below_minimum"
    btc.check_notional(Decimal("0.001"), Decimal("5000"))  # exactly the minimum is fine


def test_a_reduce_only_order_below_the_minimum_is_left_to_the_venue_but_not_below_one_step(btc):
    # A position smaller than minOrderQty (a partial close, ADL) must stay closable: a local refusal
    # of its reduce-only close meant the node could never even try.
    coarse = btc.model_copy(update={"min_qty": Decimal("0.010")})
    with pytest.raises(OrderRefused) as info:
        coarse.checked_qty(Decimal("0.005"), market=True, reduce_only=False)
    assert info.value.reason == "qty_below_minimum"
    assert coarse.checked_qty(Decimal("0.005"), market=True, reduce_only=True) == Decimal("0.005")
    with pytest.raises(OrderRefused) as info:
        coarse.checked_qty(Decimal("0.0009"), market=True, reduce_only=True)
    assert info.value.reason == "qty_below_minimum"


def test_market_maximum_applies_to_opening_orders_only(btc):
    with pytest.raises(OrderRefused):
        btc.checked_qty(Decimal("600"), market=True, reduce_only=False)
    assert btc.checked_qty(Decimal("600"), market=False, reduce_only=False) == Decimal("600.000")
    assert btc.checked_qty(Decimal("600"), market=True, reduce_only=True) == Decimal("600.000")


@pytest.mark.parametrize(
    ("value", "text"),
    [("0.012", "0.012"), ("60000.10", "60000.1"), ("100", "100"), ("1E+2", "100"), ("0.00000001", "0.00000001"), ("5.0", "5")],
)
def test_decimal_str_is_plain(value, text):
    assert decimal_str(Decimal(value)) == text
