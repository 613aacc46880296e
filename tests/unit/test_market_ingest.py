"""The ingest fast paths keep every guarantee of the validated messages."""

from __future__ import annotations

import json
from collections import OrderedDict
from decimal import Decimal

import pytest

from messages import MalformedPayload
from messages.market import ClosedBar, Kline, Ticker
from tests.conftest import SAMPLES


def sample(name):
    return json.loads((SAMPLES / name).read_text())


def closed_frame():
    frame = sample("4.6-kline-interval-symbol-1.json")
    frame["data"][0]["confirm"] = True
    return frame


def test_a_closed_kline_builds_its_bar_once_and_it_equals_a_validated_one():
    kline = Kline.from_bybit(closed_frame())[0]
    bar = kline.closed_bar()
    assert kline.closed_bar() is bar
    assert bar == ClosedBar.model_validate(bar.model_dump()) and bar.source == "ws"
    assert kline == Kline.from_bybit(closed_frame())[0]  # the cache is not part of equality
    assert hash(kline) == hash(Kline.from_bybit(closed_frame())[0])


def test_a_running_kline_has_no_closed_bar():
    with pytest.raises(ValueError):
        Kline.from_bybit(sample("4.6-kline-interval-symbol-1.json"))[0].closed_bar()


@pytest.mark.parametrize("wrapper", [dict, OrderedDict])
def test_dict_frames_and_other_mappings_are_refused_alike(wrapper):
    frame = closed_frame()
    frame["data"][0]["high"] = "1"  # below the open: inconsistent bar
    bad = wrapper(frame)
    bad["data"] = [wrapper(frame["data"][0])]
    with pytest.raises(MalformedPayload) as err:
        Kline.from_bybit(bad)
    assert err.value.what == "kline frame kline.5.BTCUSDT" and "inconsistent bar" in err.value.reasons[0]


def test_ticker_fast_path_refuses_like_the_checked_one():
    snap = sample("4.7-tickers-symbol-linear-1.json")
    for frame in (dict(snap, data=dict(snap["data"], lastPrice="NaN")), OrderedDict(snap, data=OrderedDict(
            snap["data"], lastPrice="NaN"))):
        with pytest.raises(MalformedPayload) as err:
            Ticker.from_bybit(frame)
        assert err.value.what == "ticker frame tickers.BTCUSDT" and err.value.reasons[0].startswith("lastPrice")
    with pytest.raises(MalformedPayload):
        Ticker.from_bybit(dict(snap, type="error"))


def test_a_delta_merges_exactly_the_fields_it_carried():
    snap = Ticker.from_bybit(sample("4.7-tickers-symbol-linear-1.json"))
    delta = Ticker.from_bybit({"topic": "tickers.BTCUSDT", "type": "delta", "cs": snap.seq + 1, "ts": 1760325052730,
                               "data": {"symbol": "BTCUSDT", "bid1Price": "66666.50", "fundingRate": "0"}})
    merged = snap.merge(delta)
    assert merged.bid1_price == Decimal("66666.50") and merged.funding_rate == 0  # 0 is a value
    assert merged.last_price == snap.last_price and merged.ask1_price == snap.ask1_price
    assert merged.seq == delta.seq and merged.ts == delta.ts and merged.is_snapshot


def test_ticker_fast_path_refuses_another_streams_frame():
    snap = sample("4.7-tickers-symbol-linear-1.json")
    with pytest.raises(MalformedPayload) as err:
        Ticker.from_bybit(dict(snap, topic="tickers.ETHUSDT"))
    assert err.value.reasons[0].startswith("topic:")
