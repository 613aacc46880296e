"""Message constructors: every documented Bybit sample parses; malformed input is refused clearly."""

from __future__ import annotations

import copy
import json
from datetime import timezone
from decimal import Decimal

import pytest
from pydantic import ValidationError

from messages import (
    ClosedBar,
    Direction,
    Execution,
    Kline,
    MalformedPayload,
    Order,
    OrderStatus,
    Position,
    Side,
    Signal,
    Ticker,
    Wallet,
)
from tests.conftest import SAMPLES


def sample(name: str):
    return json.loads((SAMPLES / name).read_text())


# --- every sample ---------------------------------------------------------

def test_ticker_snapshot_sample():
    t = Ticker.from_bybit(sample("4.7-tickers-symbol-linear-1.json"))
    assert t.is_snapshot and t.symbol == "BTCUSDT"
    assert t.last_price == Decimal("66666.60")
    assert t.funding_rate == Decimal("-0.005")
    assert t.ts.tzinfo is timezone.utc
    assert t.seq == 9532239429


def test_ticker_delta_merges_only_changed_fields():
    snap = Ticker.from_bybit(sample("4.7-tickers-symbol-linear-1.json"))
    delta = Ticker.from_bybit(sample("4.7-tickers-symbol-linear-2-constructed-delta.json"))
    assert not delta.is_snapshot and delta.last_price is None
    merged = snap.merge(delta)
    assert merged.bid1_price == Decimal("66666.50") and merged.bid1_size == Decimal("1.496")
    assert merged.last_price == snap.last_price and merged.ask1_price == snap.ask1_price
    assert merged.seq == delta.seq and merged.ts == delta.ts


def test_zero_funding_rate_is_a_value_not_absent():
    frame = sample("4.7-tickers-symbol-linear-2-constructed-delta.json")
    frame["data"] = {"symbol": "BTCUSDT", "fundingRate": "0"}
    delta = Ticker.from_bybit(frame)
    assert delta.funding_rate == Decimal("0") and delta.funding_rate is not None
    merged = Ticker.from_bybit(sample("4.7-tickers-symbol-linear-1.json")).merge(delta)
    assert merged.funding_rate == 0


def test_rest_ticker_sample():
    r = sample("3.3-get-v5-market-tickers-1.json")
    t = Ticker.from_rest(r["result"]["list"][0], r["time"])
    assert t.mark_price == Decimal("114898.43") and t.is_snapshot


def test_kline_ws_sample():
    (k,) = Kline.from_bybit(sample("4.6-kline-interval-symbol-1.json"))
    assert (k.symbol, k.interval, k.confirm) == ("BTCUSDT", "5", False)
    assert k.start.tzinfo is timezone.utc and k.close == Decimal("16677")
    with pytest.raises(ValueError, match="running bar"):
        k.closed_bar()


def test_closed_kline_becomes_a_ws_bar():
    frame = sample("4.6-kline-interval-symbol-1.json")
    frame["data"][0]["confirm"] = True
    bar = Kline.from_bybit(frame)[0].closed_bar()
    assert bar.source == "ws" and bar.open_ms == 1672324800000
    assert bar.close_time.timestamp() * 1000 == 1672325100000


def test_rest_kline_rows_sample():
    r = sample("3.2-get-v5-market-kline-1.json")
    bars = [ClosedBar.from_rest_row("BTCUSD", "60", row) for row in r["result"]["list"]]
    assert [b.open_ms for b in bars] == [1670608800000, 1670605200000, 1670601600000]
    assert all(b.source == "rest" for b in bars)


def test_position_samples_rest_and_ws():
    rest = Position.from_bybit(sample("3.9-get-v5-position-list-1.json")["result"]["list"][0])
    assert rest.side is Side.SELL and rest.size == 300 and rest.entry_price == Decimal("27464.50441675")
    assert rest.take_profit is None  # "0.00" means not set
    (flat,) = Position.from_ws(sample("4.10-private-position-2.json"))
    assert flat.side is None and flat.size == 0 and flat.entry_price is None and not flat.is_open


def test_order_samples_rest_and_ws():
    rest = Order.from_bybit(sample("3.8-get-v5-order-realtime-1.json")["result"]["list"][0])
    assert rest.order_status is OrderStatus.NEW and rest.avg_price is None  # "0" is not a fill price
    assert rest.order_link_id == "test-000005" and rest.stop_order_type is None
    (ws,) = Order.from_ws(sample("4.11-private-order-2.json"))
    assert ws.order_status is OrderStatus.FILLED and ws.avg_price == Decimal("75") and ws.leaves_qty is None


def test_execution_samples_rest_and_ws():
    rest = Execution.from_bybit(sample("3.15-get-v5-execution-list-1.json")["result"]["list"][0])
    assert rest.exec_pnl is None and rest.is_trade
    (ws,) = Execution.from_ws(sample("4.12-private-execution-2.json"))
    assert ws.exec_pnl == Decimal("0.05") and ws.exec_fee == Decimal("26.3725275")


def test_wallet_samples_rest_and_ws():
    r = sample("3.13-get-v5-account-wallet-balance-1.json")
    w = Wallet.from_bybit(r["result"]["list"][0], r["time"])
    assert w.account_type == "UNIFIED" and w.coin("BTC") is not None
    (ws,) = Wallet.from_ws(sample("4.13-private-wallet-2.json"))
    assert ws.total_available_balance == Decimal("9556.6056555")
    assert ws.coin("BTC").total_order_im is None  # "" means absent


def test_messages_are_immutable():
    t = Ticker.from_bybit(sample("4.7-tickers-symbol-linear-1.json"))
    with pytest.raises(ValidationError):
        t.last_price = Decimal("1")  # type: ignore[misc]


# --- malformed input ------------------------------------------------------

def _kline_frame():
    return sample("4.6-kline-interval-symbol-1.json")


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("close", None, "close: Field required"),
        ("close", "abc", "close: Input should be a valid decimal (got 'abc')"),
        ("close", "NaN", "close: Input should be a finite number (got 'NaN')"),
        ("close", "-16677", "close: Input should be greater than 0"),
        ("volume", "-1", "volume: Input should be greater than or equal to 0"),
        ("start", "yesterday", "start: expected a millisecond timestamp"),
    ],
)
def test_kline_rejects_malformed_field(field, value, reason):
    frame = _kline_frame()
    if value is None:
        del frame["data"][0][field]
    else:
        frame["data"][0][field] = value
    with pytest.raises(MalformedPayload) as err:
        Kline.from_bybit(frame)
    assert reason in str(err.value)
    assert "kline.5.BTCUSDT" in str(err.value)


def test_kline_rejects_inconsistent_ohlc_and_misaligned_start():
    frame = _kline_frame()
    frame["data"][0]["high"] = "1"
    with pytest.raises(MalformedPayload, match="inconsistent bar"):
        Kline.from_bybit(frame)
    frame = _kline_frame()
    frame["data"][0]["start"] += 1000
    with pytest.raises(MalformedPayload, match="bar boundary"):
        Kline.from_bybit(frame)


def test_kline_interval_must_match_topic():
    frame = _kline_frame()
    frame["topic"] = "kline.1.BTCUSDT"
    with pytest.raises(MalformedPayload, match="does not match the topic"):
        Kline.from_bybit(frame)


@pytest.mark.parametrize("bad", [{"type": "delta"}, {"type": "weird"}, {"data": "x"}])
def test_ticker_rejects_malformed_frames(bad):
    frame = sample("4.7-tickers-symbol-linear-1.json")
    frame.update(bad)
    if bad.get("type") == "delta":
        frame["data"] = {"symbol": "BTCUSDT", "lastPrice": "NaN"}
    with pytest.raises(MalformedPayload):
        Ticker.from_bybit(frame)


def test_ticker_snapshot_must_be_complete():
    frame = sample("4.7-tickers-symbol-linear-1.json")
    del frame["data"]["markPrice"]
    with pytest.raises(MalformedPayload, match="ticker snapshot without mark_price"):
        Ticker.from_bybit(frame)


def test_rest_row_of_wrong_shape():
    with pytest.raises(MalformedPayload, match="expected 7 values"):
        ClosedBar.from_rest_row("BTCUSDT", "1", ["1670608800000", "1"])


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d.pop("execPrice"), "execPrice: Field required"),
        (lambda d: d.update(execPrice="-1"), "execPrice: Input should be greater than 0"),
        (lambda d: d.update(execQty="1e400x"), "execQty: Input should be a valid decimal"),
        (lambda d: d.update(execFee="inf"), "execFee: Input should be a finite number"),
    ],
)
def test_execution_rejects_malformed(mutate, reason):
    frame = sample("4.12-private-execution-2.json")
    mutate(frame["data"][0])
    with pytest.raises(MalformedPayload) as err:
        Execution.from_ws(frame)
    assert reason in str(err.value)


def test_position_open_without_entry_price_is_refused():
    item = copy.deepcopy(sample("3.9-get-v5-position-list-1.json")["result"]["list"][0])
    item["avgPrice"] = "0"
    with pytest.raises(MalformedPayload, match="needs a side and an entry price"):
        Position.from_bybit(item)


def test_order_with_unknown_status_is_refused():
    item = sample("3.8-get-v5-order-realtime-1.json")["result"]["list"][0]
    item["orderStatus"] = "Exploded"
    with pytest.raises(MalformedPayload, match="orderStatus"):
        Order.from_bybit(item)


def test_wallet_negative_nan_and_wrong_types():
    r = sample("3.13-get-v5-account-wallet-balance-1.json")
    item = r["result"]["list"][0]
    item["totalEquity"] = "NaN"
    with pytest.raises(MalformedPayload, match="totalEquity"):
        Wallet.from_bybit(item, r["time"])
    with pytest.raises(MalformedPayload, match="expected an object"):
        Wallet.from_bybit(["not", "a", "dict"], r["time"])  # type: ignore[arg-type]


def test_unknown_venue_fields_are_ignored_but_code_cannot_add_fields():
    frame = _kline_frame()
    frame["data"][0]["someNewField"] = "1"
    assert Kline.from_bybit(frame)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Signal(signal_id="s1", symbol="BTCUSDT", direction=Direction.FLAT, bogus=1)  # type: ignore[call-arg]


# --- commands -------------------------------------------------------------

def test_signal_validation():
    ok = Signal(signal_id="sig-1", symbol="BTCUSDT", direction="long", qty="0.01",
                stop_loss="60000", take_profit="70000")
    assert ok.qty == Decimal("0.01") and ok.created_at.tzinfo is timezone.utc
    # No size at all is allowed (the configured default applies); two sizes are not.
    assert Signal(signal_id="sig-2", symbol="BTCUSDT", direction="short").usd is None
    with pytest.raises(ValidationError, match="qty or usd, not both"):
        Signal(signal_id="sig-2b", symbol="BTCUSDT", direction="short", qty="1", usd="100")
    with pytest.raises(ValidationError, match="takes no qty or usd"):
        Signal(signal_id="sig-2c", symbol="BTCUSDT", direction="flat", usd="100")
    with pytest.raises(ValidationError, match="stop_loss below take_profit"):
        Signal(signal_id="sig-3", symbol="BTCUSDT", direction="long", qty="1", stop_loss="70000", take_profit="60000")
    with pytest.raises(ValidationError, match="greater than 0"):
        Signal(signal_id="sig-4", symbol="BTCUSDT", direction="long", qty="-1")
    with pytest.raises(ValidationError, match="signal_id"):
        Signal(signal_id="has space", symbol="BTCUSDT", direction="flat")
    with pytest.raises(ValidationError, match="finite"):
        Signal(signal_id="sig-5", symbol="BTCUSDT", direction="long", qty="NaN")
