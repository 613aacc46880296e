"""Trading against the simulator through pybit: orders, positions, TP/SL, account, DCP, funding."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pybit.exceptions import InvalidRequestError

from messages.account import Execution, Order, Position, Wallet
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


def last_price(http, symbol="BTCUSDT") -> Decimal:
    return Decimal(http.get_tickers(category="linear", symbol=symbol)["result"]["list"][0]["lastPrice"])


def positions(http, symbol="BTCUSDT") -> list[Position]:
    return [Position.from_bybit(p) for p in http.get_positions(category="linear", symbol=symbol)["result"]["list"]]


def far_below(px: Decimal) -> str:
    """A buy limit the price walk cannot reach while a test moves the clock.

    The simulator's price is a function of the minute, and `sim` starts at the wall
    clock's minute: an order resting 100 below the market filled during a 60 s advance
    at about one start minute in 200 (e.g. 2026-12-02T12:56Z), whatever the test meant.
    5 % below: well inside the venue's +-10 % band for limit prices (110003 outside it).
    """
    return str((px * Decimal("0.95")).quantize(Decimal("0.1")))


def open_orders(http, symbol="BTCUSDT", **kw) -> list[Order]:
    rows = http.get_open_orders(category="linear", symbol=symbol, **kw)["result"]["list"]
    return [Order.from_bybit(o) for o in rows]


def error_code(fn, *args, **kwargs) -> int:
    with pytest.raises(InvalidRequestError) as err:
        fn(*args, **kwargs)
    return err.value.status_code


@pytest.fixture
def private(open_ws):
    prv = open_ws("private")
    for topic in ("order", "execution", "position", "wallet"):
        prv.subscribe(topic)
    return prv


def test_market_order_with_tp_sl_fills_pushes_and_stops_out(sim, sim_http, private):
    px = last_price(sim_http)
    tp, sl = (px * Decimal("1.02")).quantize(Decimal("0.1")), (px * Decimal("0.98")).quantize(Decimal("0.1"))
    answer = sim_http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.010",
                                  orderLinkId="entry-1", takeProfit=str(tp), stopLoss=str(sl))
    order_id = answer["result"]["orderId"]
    assert answer["result"]["orderLinkId"] == "entry-1"
    # Pushes: execution, order, position, wallet.
    exe = private.wait_for(lambda f: f["topic"] == "execution" and f["data"][0]["orderId"] == order_id)
    (fill,) = Execution.from_ws(exe)
    assert fill.is_trade and fill.exec_qty == Decimal("0.010") and fill.exec_price == px + Decimal("0.1")
    filled = private.wait_for(lambda f: f["topic"] == "order" and any(
        o["orderId"] == order_id and o["orderStatus"] == "Filled" for o in f["data"]))
    entry = next(o for o in Order.from_ws(filled) if o.order_id == order_id)
    assert entry.avg_price == fill.exec_price and entry.take_profit == tp and entry.stop_loss == sl
    pos_frame = private.wait_for(lambda f: f["topic"] == "position" and f["data"][0]["size"] == "0.010")
    (pos,) = Position.from_ws(pos_frame)
    assert pos.side.value == "Buy" and pos.take_profit == tp and pos.stop_loss == sl
    wallet = Wallet.from_ws(private.wait_for(lambda f: f["topic"] == "wallet"))[0]
    assert wallet.total_wallet_balance == Decimal("10000") - fill.exec_fee
    # The position's TP/SL are conditional orders.
    conditionals = {o.stop_order_type: o for o in open_orders(sim_http)}
    assert set(conditionals) == {"TakeProfit", "StopLoss"}
    assert conditionals["StopLoss"].trigger_price == sl and conditionals["StopLoss"].reduce_only
    # The market falls through the stop: the position closes at the gapped price.
    crash = (sl - Decimal("50")).quantize(Decimal("0.1"))
    count = len(private.snapshot())
    sim.set_price("BTCUSDT", crash)
    stop_fill = private.wait_for(lambda f: f["topic"] == "execution"
                                 and f["data"][0]["orderId"] == conditionals["StopLoss"].order_id, after=count)
    (stop_exec,) = Execution.from_ws(stop_fill)
    assert stop_exec.exec_price == crash and stop_exec.side.value == "Sell" and stop_exec.exec_pnl < 0
    wait_until(lambda: positions(sim_http)[0].size == 0)
    assert open_orders(sim_http) == []
    closed = {o.stop_order_type: o for o in open_orders(sim_http, openOnly=1)}
    assert closed["TakeProfit"].order_status.value == "Deactivated"
    assert closed["TakeProfit"].cancel_type == "CancelByTpSlTsClear"
    assert closed["StopLoss"].order_status.value == "Filled"
    pnl = sim_http.get_closed_pnl(category="linear", symbol="BTCUSDT")["result"]["list"]
    assert len(pnl) == 1 and Decimal(pnl[0]["closedPnl"]) < 0 and pnl[0]["closedSize"] == "0.010"
    execs = sim_http.get_executions(category="linear", symbol="BTCUSDT")["result"]["list"]
    assert [e["orderId"] for e in execs] == [conditionals["StopLoss"].order_id, order_id]  # newest first


def test_duplicate_order_link_id_is_110072(sim_http):
    px = last_price(sim_http)
    sim_http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Limit", qty="0.001",
                         price=str(px - 100), orderLinkId="same-id")
    assert error_code(sim_http.place_order, category="linear", symbol="BTCUSDT", side="Buy", orderType="Limit",
                      qty="0.001", price=str(px - 100), orderLinkId="same-id") == 110072
    assert len(open_orders(sim_http)) == 1


def test_reduce_only_that_would_open_is_110017(sim_http):
    assert error_code(sim_http.place_order, category="linear", symbol="BTCUSDT", side="Sell", orderType="Market",
                      qty="0.001", reduceOnly=True) == 110017
    sim_http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.002")
    # Same side as the position: would add, so refused too.
    assert error_code(sim_http.place_order, category="linear", symbol="BTCUSDT", side="Buy", orderType="Market",
                      qty="0.001", reduceOnly=True) == 110017
    # A reduce-only bigger than the position closes exactly the position.
    sim_http.place_order(category="linear", symbol="BTCUSDT", side="Sell", orderType="Market", qty="0.005",
                         reduceOnly=True)
    assert positions(sim_http)[0].size == 0


def test_limit_order_rests_amends_cancels(sim, sim_http, private):
    px = last_price(sim_http)
    oid = sim_http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Limit", qty="0.001",
                               price=str(px - 200))["result"]["orderId"]
    (resting,) = open_orders(sim_http)
    assert resting.order_status.value == "New" and resting.price == px - 200
    sim_http.amend_order(category="linear", symbol="BTCUSDT", orderId=oid, price=str(px - 150))
    assert open_orders(sim_http)[0].price == px - 150
    assert error_code(sim_http.amend_order, category="linear", symbol="BTCUSDT", orderId=oid,
                      price=str(px - 150)) == 10001
    sim_http.cancel_order(category="linear", symbol="BTCUSDT", orderId=oid)
    assert open_orders(sim_http) == []
    assert error_code(sim_http.cancel_order, category="linear", symbol="BTCUSDT", orderId=oid) == 110001
    assert error_code(sim_http.cancel_order, category="linear", symbol="BTCUSDT", orderLinkId="nope") == 110001
    history = sim_http.get_order_history(category="linear", symbol="BTCUSDT")["result"]["list"]
    assert history[0]["orderId"] == oid and history[0]["orderStatus"] == "Cancelled"


def test_resting_limit_fills_as_maker_when_the_market_reaches_it(sim, sim_http, private):
    px = last_price(sim_http)
    oid = sim_http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Limit", qty="0.001",
                               price=str(px - 300))["result"]["orderId"]
    sim.set_price("BTCUSDT", px - 400)
    exe = private.wait_for(lambda f: f["topic"] == "execution" and f["data"][0]["orderId"] == oid)
    (fill,) = Execution.from_ws(exe)
    assert fill.is_maker and fill.exec_price == px - 300 and fill.fee_rate == Decimal("0.0002")


def test_cancel_all_filters(sim_http):
    px = last_price(sim_http)
    sim_http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.001",
                         stopLoss=str(px - 500))
    sim_http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Limit", qty="0.001",
                         price=str(px - 100))
    sim_http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.001",
                         triggerPrice=str(px + 100), triggerDirection=1)
    assert error_code(sim_http.cancel_all_orders, category="linear") == 10001
    # orderFilter=Order: only resting entry orders; the stop-loss and the conditional stay.
    done = sim_http.cancel_all_orders(category="linear", symbol="BTCUSDT", orderFilter="Order")["result"]
    assert len(done["list"]) == 1 and done["success"] == "1"
    kinds = sorted(o.stop_order_type for o in open_orders(sim_http))
    assert kinds == ["Stop", "StopLoss"]
    # StopOrder + stopOrderType=Stop: conditionals except TP/SL.
    sim_http.cancel_all_orders(category="linear", symbol="BTCUSDT", orderFilter="StopOrder", stopOrderType="Stop")
    assert [o.stop_order_type for o in open_orders(sim_http)] == ["StopLoss"]
    # No filter: everything, TP/SL included.
    sim_http.cancel_all_orders(category="linear", symbol="BTCUSDT")
    assert open_orders(sim_http) == [] and positions(sim_http)[0].stop_loss is None


def test_realtime_shows_open_and_recent_closed_history_shows_all(sim_http):
    px = last_price(sim_http)
    filled = sim_http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market",
                                  qty="0.001", orderLinkId="mkt")["result"]["orderId"]
    resting = sim_http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Limit",
                                   qty="0.001", price=str(px - 100), orderLinkId="lmt")["result"]["orderId"]
    assert [o.order_id for o in open_orders(sim_http)] == [resting]
    assert [o.order_id for o in open_orders(sim_http, openOnly=1)] == [filled]
    assert [o.order_id for o in open_orders(sim_http, orderLinkId="mkt")] == []
    history = sim_http.get_order_history(category="linear", symbol="BTCUSDT", orderLinkId="mkt")["result"]["list"]
    assert [h["orderId"] for h in history] == [filled] and history[0]["orderStatus"] == "Filled"


def test_trading_stop_sets_moves_and_cancels(sim_http):
    px = last_price(sim_http)
    assert error_code(sim_http.set_trading_stop, category="linear", symbol="BTCUSDT", tpslMode="Full",
                      positionIdx=0, stopLoss=str(px - 100)) == 10001  # no position
    sim_http.place_order(category="linear", symbol="BTCUSDT", side="Sell", orderType="Market", qty="0.002")
    sim_http.set_trading_stop(category="linear", symbol="BTCUSDT", tpslMode="Full", positionIdx=0,
                              stopLoss=str(px + 300), takeProfit=str(px - 300))
    (pos,) = positions(sim_http)
    assert pos.stop_loss == px + 300 and pos.take_profit == px - 300
    assert error_code(sim_http.set_trading_stop, category="linear", symbol="BTCUSDT", tpslMode="Full",
                      positionIdx=0, stopLoss=str(px + 300)) == 34040
    sim_http.set_trading_stop(category="linear", symbol="BTCUSDT", tpslMode="Full", positionIdx=0, takeProfit="0")
    (pos,) = positions(sim_http)
    assert pos.take_profit is None and pos.stop_loss == px + 300
    assert [o.stop_order_type for o in open_orders(sim_http)] == ["StopLoss"]
    assert error_code(sim_http.set_trading_stop, category="linear", symbol="BTCUSDT", positionIdx=0,
                      stopLoss=str(px + 200)) == 10001  # tpslMode is required


def test_leverage_mode_and_errors(sim_http):
    sim_http.set_leverage(category="linear", symbol="BTCUSDT", buyLeverage="5", sellLeverage="5")
    assert positions(sim_http)[0].leverage == 5
    assert error_code(sim_http.set_leverage, category="linear", symbol="BTCUSDT", buyLeverage="5",
                      sellLeverage="5") == 110043
    assert error_code(sim_http.switch_position_mode, category="linear", symbol="BTCUSDT", mode=0) == 110025
    sim_http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.001")
    assert error_code(sim_http.switch_position_mode, category="linear", symbol="BTCUSDT", mode=3) == 110024
    # ETHUSDT has nothing open: hedge mode, two position rows.
    sim_http.switch_position_mode(category="linear", symbol="ETHUSDT", mode=3)
    rows = sim_http.get_positions(category="linear", symbol="ETHUSDT")["result"]["list"]
    assert [r["positionIdx"] for r in rows] == [1, 2]


def test_insufficient_balance_is_110007(sim_factory, sim_creds):
    from infra.bybit.clients import make_http

    poor = sim_factory(starting_balance_usdt=Decimal("20"))
    http = make_http(poor.urls, sim_creds)
    assert error_code(http.place_order, category="linear", symbol="BTCUSDT", side="Buy", orderType="Market",
                      qty="0.050") == 110007


def test_key_permissions_can_include_withdrawal(sim, sim_http):
    sim.set_withdrawal_permission(True)
    assert "Withdraw" in sim_http.get_api_key_information()["result"]["permissions"]["Wallet"]


def test_account_endpoints(sim_http):
    wallet = sim_http.get_wallet_balance(accountType="UNIFIED")["result"]["list"][0]
    parsed = Wallet.from_bybit(wallet, 1)
    assert parsed.total_equity == Decimal("10000") and parsed.coin("USDT").wallet_balance == Decimal("10000")
    fees = sim_http.get_fee_rates(category="linear", symbol="BTCUSDT")["result"]["list"]
    assert fees == [{"symbol": "BTCUSDT", "takerFeeRate": "0.00055", "makerFeeRate": "0.0002", "baseCoin": ""}]
    key = sim_http.get_api_key_information()["result"]
    assert "Withdraw" not in key["permissions"]["Wallet"] and key["readOnly"] == 0
    dcp = sim_http.query_dcp_info()["result"]["dcpInfos"]
    assert dcp == [{"product": "DERIVATIVES", "dcpStatus": "ON", "timeWindow": "10"}]


def test_dcp_cancels_open_orders_after_the_private_socket_is_gone(sim, sim_http, open_ws):
    px = last_price(sim_http)
    assert sim_http.set_dcp(product="DERIVATIVES", timeWindow=5) == {"retCode": 0, "retMsg": "success"}
    sim_http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.001",
                         stopLoss=far_below(px))
    sim_http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Limit", qty="0.001",
                         price=far_below(px), orderLinkId="resting")
    prv = open_ws("private")
    prv.subscribe("dcp.future")
    wait_until(lambda: sim.call(lambda ex: len(ex.account.dcp_conns)) == 1)
    prv.close()  # the client is gone for good (a dropped socket would reconnect at once)
    wait_until(lambda: sim.call(lambda ex: len(ex.account.dcp_conns)) == 0)
    sim.clock.advance(4)
    assert [o.order_link_id for o in open_orders(sim_http) if not o.stop_order_type] == ["resting"]
    sim.clock.advance(2)
    remaining = open_orders(sim_http)
    assert [o.stop_order_type for o in remaining] == ["StopLoss"]  # protective order kept
    cancelled = open_orders(sim_http, openOnly=1, orderLinkId="resting")
    assert cancelled[0].cancel_type == "CancelByDCP"
    assert positions(sim_http)[0].size == Decimal("0.001")  # never closes positions


def test_dcp_does_not_fire_while_a_subscribed_socket_lives(sim, sim_http, open_ws):
    px = last_price(sim_http)
    sim_http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Limit", qty="0.001",
                         price=far_below(px))
    first, second = open_ws("private"), open_ws("private")
    first.subscribe("dcp.future")
    second.subscribe("dcp.future")
    wait_until(lambda: sim.call(lambda ex: len(ex.account.dcp_conns)) == 2)
    first.close()
    wait_until(lambda: sim.call(lambda ex: len(ex.account.dcp_conns)) == 1)
    sim.clock.advance(60)
    assert len(open_orders(sim_http)) == 1


def test_account_without_dcp(sim_factory, sim_creds):
    from infra.bybit.clients import make_http

    http = make_http(sim_factory(dcp_available=False).urls, sim_creds)
    assert http.query_dcp_info()["result"]["dcpInfos"] == []
    assert error_code(http.set_dcp, product="DERIVATIVES", timeWindow=10) == 10005


def test_funding_settles_as_a_funding_execution(sim, sim_http, private):
    sim_http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.010")
    ticker = sim_http.get_tickers(category="linear", symbol="BTCUSDT")["result"]["list"][0]
    funding_at, rate = int(ticker["nextFundingTime"]), Decimal(ticker["fundingRate"])
    sim.clock.advance_to(funding_at + 1000)
    frame = private.wait_for(lambda f: f["topic"] == "execution" and f["data"][0]["execType"] == "Funding")
    (funding,) = Execution.from_ws(frame)
    assert not funding.is_trade and funding.exec_time.timestamp() * 1000 == funding_at
    assert funding.exec_fee == (funding.exec_value * rate).quantize(Decimal("0.00000001"))
    rows = sim_http.get_executions(category="linear", symbol="BTCUSDT", execType="Funding")["result"]["list"]
    assert len(rows) == 1 and rows[0]["execType"] == "Funding"


def test_dcp_counts_an_unsubscribe_as_gone(sim, sim_http, open_ws):
    px = last_price(sim_http)
    sim_http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Limit", qty="0.001",
                         price=far_below(px), orderLinkId="resting")
    prv = open_ws("private")
    prv.subscribe("dcp.future")
    wait_until(lambda: sim.call(lambda ex: len(ex.account.dcp_conns)) == 1)
    prv.ws.unsubscribe("dcp.future")
    wait_until(lambda: sim.call(lambda ex: len(ex.account.dcp_conns)) == 0)
    sim.clock.advance(11)
    assert open_orders(sim_http) == []
    # Gone because DCP cancelled it, not because the market reached it.
    assert open_orders(sim_http, openOnly=1, orderLinkId="resting")[0].cancel_type == "CancelByDCP"
