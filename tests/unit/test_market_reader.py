"""LiveMarketReader: the stream when fresh (no REST at all), one cached REST read when not, stale as an error."""

from __future__ import annotations

import json
import threading
from decimal import Decimal

import pytest

from infra.bybit.errors import ExchangeError
from infra.market_reader import FUNDING_FIELDS, LiveMarketReader, StaleMarketData
from messages import Ticker
from messages.queries import GetTicker, TickerView
from tests.conftest import SAMPLES


def ws_ticker(**changes) -> Ticker:
    frame = json.loads((SAMPLES / "4.7-tickers-symbol-linear-1.json").read_text())
    frame["data"].update(changes)
    return Ticker.from_bybit(frame)


def rest_ticker(last="60000", funding="0.0001") -> Ticker:
    return Ticker.from_rest({"symbol": "BTCUSDT", "lastPrice": last, "markPrice": last, "indexPrice": last,
                             "fundingRate": funding, "nextFundingTime": "1700000000000"}, 1_700_000_000_000)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class StateRef:
    def __init__(self, ticker=None, age=None):
        self.view = TickerView(ticker=ticker, age_s=age)
        self.asks = 0

    def ask(self, message, timeout=None):
        assert isinstance(message, GetTicker) and timeout is not None
        self.asks += 1
        return self.view


class Gateway:
    def __init__(self, ticker=None, fail=False):
        self.ticker = ticker or rest_ticker()
        self.fail = fail
        self.calls = 0

    def get_ticker(self, symbol):
        self.calls += 1
        if self.fail:
            raise ExchangeError("venue unreachable")
        return self.ticker


def reader(state, gateway, clock=None):
    return LiveMarketReader(lambda: state, gateway, price_ttl_s=5, funding_ttl_s=60, ask_timeout_s=1,
                            clock=clock or Clock())


def test_fresh_stream_costs_no_rest_call():
    state, gw = StateRef(ws_ticker(), age=0.5), Gateway()
    r = reader(state, gw)
    for _ in range(20):
        q = r.quote("BTCUSDT")
        assert q.source == "ws" and q.age_s == 0.5 and q.last_price is not None
    assert gw.calls == 0 and state.asks == 20


def test_a_view_the_caller_holds_is_used_instead_of_a_second_ask():
    state, gw = StateRef(ws_ticker(), age=0.5), Gateway()
    r = reader(state, gw)
    q = r.quote("BTCUSDT", stream=TickerView(ticker=ws_ticker(), age_s=0.2))
    assert q.source == "ws" and q.age_s == 0.2 and state.asks == 0 and gw.calls == 0
    # A view that is too old still falls back to REST, exactly as an asked one would.
    q = r.quote("BTCUSDT", max_age_s=1, stream=TickerView(ticker=ws_ticker(), age_s=3.0))
    assert q.source == "rest" and gw.calls == 1 and state.asks == 0


def test_stale_stream_reads_rest_once_then_serves_the_cache_until_its_ttl():
    clock = Clock()
    state, gw = StateRef(ws_ticker(), age=12.0), Gateway()
    r = reader(state, gw, clock)
    q = r.quote("BTCUSDT")
    assert (q.source, q.age_s, q.last_price) == ("rest", 0.0, Decimal("60000"))
    clock.now += 3
    q2 = r.quote("BTCUSDT")
    assert (q2.source, q2.age_s) == ("rest", 3.0) and gw.calls == 1
    clock.now += 3  # the cached answer is now 6 s old: older than the price TTL
    assert r.quote("BTCUSDT").age_s == 0.0 and gw.calls == 2


def test_funding_fields_use_their_own_ttl():
    state, gw = StateRef(ws_ticker(), age=30.0), Gateway()
    q = reader(state, gw).quote("BTCUSDT", fields=FUNDING_FIELDS)
    assert q.source == "ws" and gw.calls == 0


def test_zero_funding_is_a_value_not_a_reason_to_call_rest():
    state, gw = StateRef(ws_ticker(fundingRate="0"), age=0.1), Gateway()
    q = reader(state, gw).quote("BTCUSDT", fields=FUNDING_FIELDS)
    assert q.funding_rate == Decimal("0") and q.source == "ws" and gw.calls == 0


def test_max_age_that_cannot_be_met_is_stale_data_not_an_old_value():
    state, gw = StateRef(ws_ticker(), age=2.0), Gateway(fail=True)
    r = reader(state, gw)
    with pytest.raises(StaleMarketData) as err:
        r.quote("BTCUSDT", max_age_s=1.0)
    assert err.value.age_s == 2.0 and err.value.max_age_s == 1.0 and gw.calls == 1
    # Without a demand the old value comes back, honestly aged.
    q = r.quote("BTCUSDT")
    assert q.source == "ws" and q.age_s == 2.0


def test_no_value_anywhere_is_stale_data():
    with pytest.raises(StaleMarketData) as err:
        reader(StateRef(None, None), Gateway(fail=True)).quote("BTCUSDT")
    assert err.value.age_s is None


def test_concurrent_callers_share_one_rest_read():
    state = StateRef(None, None)
    gate = threading.Event()

    class SlowGateway(Gateway):
        def get_ticker(self, symbol):
            gate.wait(2)
            return super().get_ticker(symbol)

    gw = SlowGateway()
    r = reader(state, gw)
    results = []
    threads = [threading.Thread(target=lambda: results.append(r.quote("BTCUSDT"))) for _ in range(5)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(5)
    assert len(results) == 5 and all(q.source == "rest" for q in results) and gw.calls == 1
