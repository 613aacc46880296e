"""Executor with mocked peers (StateStore, Risk, Panic), a counting gateway and a fake market reader."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest

from actors.base import ActorContext, Directory, Role
from actors.executor import Executor, fill_from, order_qty, price_deviation_pct
from actors.risk import RiskEngine
from infra.bybit import OrderAck, OutcomeUnknown, RateLimited, Rejected, Resolution, order_link_id
from infra.config import AppConfig, ExchangeConfig, NodeConfig, RiskConfig
from infra.market_reader import Quote
from infra.store.risk_state import RiskDay
from messages.account import Order
from messages.commands import ClosePosition, CloseOutcome, CloseResult, Signal
from messages.control import TradingState, TradingStateChanged
from messages.queries import GetSnapshot, GetTradingState
from messages.trading import ExecutionOutcome, GetExecution, RiskCheck, RiskDecision
from messages.types import Side, now_utc
from tests.helpers import wait_until
from tests.trading_fakes import T0, FakeGateway, FakeReader, Peer, answer_state, btc_instrument, execution, position, snapshot, wallet

pytestmark = pytest.mark.timeout(30)


class World:
    """An Executor and its mocked peers. `state[0]` is what the StateStore answers."""

    def __init__(self, tmp_path, *, allow: bool = True, generation: int = 0, exchange: ExchangeConfig | None = None,
                 **risk):
        self.state = [snapshot(wallet())]
        self.gateway = FakeGateway()
        self.reader = FakeReader()
        self.directory = Directory()
        self.allow = allow
        store = Peer.start(answer_state(lambda: self.state[0]))
        self.store = store.proxy()
        self.directory.register(Role.STATE_STORE, store)
        self.risk_reply = None
        risk_ref = Peer.start(self._risk_peer)
        self.risk = risk_ref.proxy()
        self.directory.register(Role.RISK, risk_ref)
        self.close_result: CloseResult | None = None
        self.panic_reply = None
        panic_ref = Peer.start(self._panic)
        self.panic = panic_ref.proxy()
        self.directory.register(Role.PANIC, panic_ref)
        limits = RiskConfig(**{"fill_stream_wait_s": Decimal("0.3"), "fill_timeout_s": Decimal("1.5"), **risk})
        node = NodeConfig(data_dir=tmp_path / "data", risk=limits, exchange=exchange or ExchangeConfig())
        ctx = ActorContext(config=AppConfig(node=node, credentials=None, source="test"), directory=self.directory,
                           generation=generation)
        self.ref = Executor.start(ctx, reader=self.reader, gateway=self.gateway)
        self.set_state(TradingState.ACTIVE)

    def _risk_peer(self, m):
        return (self.risk_reply or self._risk)(m)

    def _risk(self, m):
        if isinstance(m, RiskCheck):
            return RiskDecision(True, None, "ok") if self.allow else RiskDecision(False, "daily_loss", "limit")
        return None

    def _panic(self, m):
        if self.panic_reply is not None:
            return self.panic_reply(m)
        if isinstance(m, ClosePosition):
            return self.close_result or CloseResult(symbol=m.symbol, outcome=CloseOutcome.CLOSED, signal_id=m.signal_id,
                                                    order_id="close-1", order_link_id="c-1", closed_qty=Decimal("0.01"),
                                                    avg_price=Decimal("60010"))
        return None

    def set_state(self, state: TradingState) -> None:
        self.ref.tell(TradingStateChanged(state=state, previous=TradingState.HALTED, reason="test"))

    def signal(self, signal_id: str = "sig-1", direction: str = "long", **kw):
        sig = Signal(signal_id=signal_id, symbol=kw.pop("symbol", "BTCUSDT"), direction=direction, **kw)
        return self.ref.ask(sig, timeout=5)

    def entry(self, signal_id: str = "sig-1", direction: str = "long", **kw):
        """Send an entry and wait for its create's answer: the result once placed (PENDING with the
        venue's order id) or final (refused, rejected, unknown). The first answer only says "sent"."""
        first = self.signal(signal_id, direction, **kw)
        if first.final or first.order_id:
            return first
        return wait_until(lambda: (r := self.result(signal_id)) is not None and (r.final or r.order_id) and r,
                          timeout=5, what=f"the create of {signal_id} answered")

    def result(self, signal_id: str):
        return self.ref.ask(GetExecution(signal_id=signal_id), timeout=5)

    def final(self, signal_id: str, timeout: float = 5.0):
        return wait_until(lambda: (r := self.result(signal_id)) is not None and r.final and r, timeout=timeout,
                          what=f"final result of {signal_id}")

    def fill_on_stream(self, link: str, *fills: tuple[str, str]) -> None:
        execs = tuple(execution(link, f"oid-{link}", q, p, exec_id=f"e{i}") for i, (q, p) in enumerate(fills))
        self.state[0] = snapshot(wallet(), executions=execs)


# --- the pure parts --------------------------------------------------------------------------


def test_size_from_qty_usd_or_default_rounded_down_to_the_step():
    inst = btc_instrument()
    price = Decimal("60000")
    sig = lambda **kw: Signal(signal_id="s", symbol="BTCUSDT", direction="long", **kw)  # noqa: E731
    assert order_qty(sig(qty=Decimal("0.0129")), price, inst, Decimal("100")) == Decimal("0.012")
    assert order_qty(sig(usd=Decimal("250")), price, inst, Decimal("100")) == Decimal("0.004")
    assert order_qty(sig(), price, inst, Decimal("100")) == Decimal("0.001")


def test_price_deviation_against_the_signal_and_the_mark():
    q = Quote(symbol="BTCUSDT", last_price=Decimal("60600"), mark_price=Decimal("60000"), funding_rate=None,
              next_funding_time=None, source="ws", age_s=0.1)
    dev, against = price_deviation_pct(q, Decimal("60000"))
    assert dev == Decimal("1") and against == "signal_price"
    dev, against = price_deviation_pct(q, None)
    assert dev == Decimal("1") and against == "mark_price"


def _order(status: str, avg: str, cum: str = "0.01") -> Order:
    return Order(orderId="o1", orderLinkId="l1", symbol="BTCUSDT", side="Buy", orderType="Market", orderStatus=status,
                 qty="0.01", avgPrice=avg, cumExecQty=cum, createdTime=T0)


def test_fill_price_is_the_orders_avg_price_or_else_the_executions_never_none_of_them_made_up():
    e = [execution("l1", "o1", "0.004", "60010", "a"), execution("l1", "o1", "0.006", "60020", "b")]
    assert fill_from(_order("Filled", "60015"), e).source == "order"
    fill = fill_from(_order("Filled", "0"), e)
    assert fill.source == "executions" and fill.avg_price == Decimal("60016")
    assert fill_from(_order("Filled", "0"), []) is None  # no price known: wait, never a quote
    assert fill_from(_order("New", "0", "0"), e) is None


# --- the actor --------------------------------------------------------------------------------------


def test_a_repeated_signal_never_places_a_second_order(tmp_path, events):
    w = World(tmp_path)
    first = w.entry("sig-rep", qty=Decimal("0.01"))
    link = order_link_id("sig-rep", "entry", prefix="x")
    assert first.outcome is ExecutionOutcome.PENDING and first.order_link_id == link
    w.fill_on_stream(link, ("0.01", "60005"))
    assert w.final("sig-rep").outcome is ExecutionOutcome.FILLED
    again = w.entry("sig-rep", qty=Decimal("0.01"))
    assert again.outcome is ExecutionOutcome.FILLED and again.order_link_id == link
    assert w.gateway.calls["create_order"] == 1
    assert any(e["event"] == "executor.duplicate_signal" for e in events())


def _lost_answer(req):
    raise OutcomeUnknown("the answer was lost and the lookup found nothing", order_link_id=req.order_link_id)


def test_a_retry_after_an_unknown_outcome_resends_the_same_order_link_id(tmp_path):
    w = World(tmp_path)
    w.gateway.on_create = _lost_answer
    assert w.entry("sig-u", qty=Decimal("0.01")).outcome is ExecutionOutcome.UNKNOWN
    w.gateway.on_create = None
    assert w.entry("sig-u", qty=Decimal("0.01")).outcome is ExecutionOutcome.PENDING
    links = [r.order_link_id for r in w.gateway.created]
    assert len(links) == 2 and links[0] == links[1] == order_link_id("sig-u", "entry", prefix="x")


def test_a_blocked_resend_after_an_unknown_outcome_leaves_the_signal_unknown_and_retryable(tmp_path):
    """A re-send of an UNKNOWN signal that a check stops (here REDUCING) replaced UNKNOWN with BLOCKED
    ("nothing was sent"), though the first send's order may exist; every later re-send was then
    answered from the ledger as a duplicate, so the unknown outcome could never be resolved."""
    w = World(tmp_path)
    w.gateway.on_create = _lost_answer
    assert w.entry("sig-ub", qty=Decimal("0.01")).outcome is ExecutionOutcome.UNKNOWN
    w.gateway.on_create = None
    w.set_state(TradingState.REDUCING)
    blocked = w.entry("sig-ub", qty=Decimal("0.01"))
    assert blocked.outcome is ExecutionOutcome.UNKNOWN and "REDUCING" in blocked.reason
    assert w.result("sig-ub").outcome is ExecutionOutcome.UNKNOWN
    w.set_state(TradingState.ACTIVE)
    assert w.entry("sig-ub", qty=Decimal("0.01")).outcome is ExecutionOutcome.PENDING
    assert w.gateway.calls["create_order"] == 2


def test_an_unknown_outcome_holds_its_symbol_until_the_venue_shows_the_order(tmp_path, events):
    """After an unknown outcome the symbol was free at once: a second entry went out while the first
    one's order could still be on the venue, doubling the position. Unknown now fails closed for that
    symbol; the Executor looks the order up by its orderLinkId and confirms its fill like any other."""
    w = World(tmp_path, fill_timeout_s=Decimal("20"))  # the lookups must not give up before the order shows
    w.gateway.on_create = _lost_answer
    assert w.entry("sig-ua", qty=Decimal("0.01")).outcome is ExecutionOutcome.UNKNOWN
    w.gateway.on_create = None
    second = w.entry("sig-ub2", qty=Decimal("0.01"))
    assert second.outcome is ExecutionOutcome.BLOCKED and second.check == "order_in_flight", second
    assert w.entry("sig-eth", symbol="ETHUSDT", qty=Decimal("0.1")).outcome is ExecutionOutcome.PENDING
    assert w.gateway.calls["create_order"] == 2  # sig-ua and sig-eth; never sig-ub2
    link = order_link_id("sig-ua", "entry", prefix="x")
    w.gateway.orders[link] = Order(orderId="oid-late", orderLinkId=link, symbol="BTCUSDT", side="Buy", orderType="Market",
                                   orderStatus="Filled", qty="0.01", avgPrice="60010", cumExecQty="0.01", createdTime=T0)
    res = wait_until(lambda: (r := w.result("sig-ua")).outcome is ExecutionOutcome.FILLED and r, timeout=5,
                     what="the unknown order found and its fill confirmed")
    assert res.outcome is ExecutionOutcome.FILLED and res.avg_price == Decimal("60010") and res.order_id == "oid-late"
    assert any(e["event"] == "order.unknown_resolved" and e["order_id"] == "oid-late" for e in events())
    assert w.entry("sig-ub3", qty=Decimal("0.01")).outcome is ExecutionOutcome.PENDING


def test_an_unknown_order_never_found_releases_its_symbol_after_the_fill_timeout(tmp_path, events):
    w = World(tmp_path)
    w.gateway.on_create = _lost_answer
    assert w.entry("sig-un", qty=Decimal("0.01")).outcome is ExecutionOutcome.UNKNOWN
    w.gateway.on_create = None
    released = wait_until(lambda: [e for e in events() if e["event"] == "order.unknown_released"], timeout=5,
                          what="the symbol released")
    assert released[0]["signal_id"] == "sig-un" and released[0]["level"] == "error"
    assert w.result("sig-un").outcome is ExecutionOutcome.UNKNOWN  # never claimed to be absent
    assert w.entry("sig-un2", qty=Decimal("0.01")).outcome is ExecutionOutcome.PENDING
    assert w.gateway.calls["get_order"] >= 1


def test_a_create_the_venue_never_took_can_be_resent_with_the_same_signal_id(tmp_path, events):
    """A rate-limited create (10006) created nothing, yet its REJECTED result was final: a re-send of
    the same signal was answered from the ledger as a duplicate and never reached the venue. It is
    now marked retryable; a refusal by the venue itself stays final."""
    w = World(tmp_path)
    w.gateway.on_create = lambda req: (_ for _ in ()).throw(RateLimited("retCode 10006: Too many visits!",
                                                                         retry_after_s=0.2))
    first = w.entry("sig-rl", qty=Decimal("0.01"))
    assert first.outcome is ExecutionOutcome.REJECTED and first.retryable
    w.gateway.on_create = None
    assert w.entry("sig-rl", qty=Decimal("0.01")).outcome is ExecutionOutcome.PENDING
    assert w.gateway.calls["create_order"] == 2
    w.gateway.on_create = lambda req: (_ for _ in ()).throw(Rejected(110007, "ab not enough for new order"))
    refused = w.entry("sig-poor", symbol="ETHUSDT", qty=Decimal("0.01"))
    assert refused.outcome is ExecutionOutcome.REJECTED and not refused.retryable
    assert w.entry("sig-poor", symbol="ETHUSDT", qty=Decimal("0.01")).outcome is ExecutionOutcome.REJECTED
    assert w.gateway.calls["create_order"] == 3


def test_fresh_state_means_zero_rest_price_calls_and_the_order_carries_tp_sl(tmp_path, events):
    w = World(tmp_path)
    w.entry("sig-f", qty=Decimal("0.01"), take_profit=Decimal("66000"), stop_loss=Decimal("57000"))
    link = order_link_id("sig-f", "entry", prefix="x")
    w.fill_on_stream(link, ("0.01", "60001"))
    res = w.final("sig-f")
    assert res.outcome is ExecutionOutcome.FILLED and res.avg_price == Decimal("60001")
    assert w.gateway.rest_calls() == {}  # no ticker, wallet, order or execution call
    assert w.reader.calls == 1 and w.reader.rest_answers == 0
    req = w.gateway.created[0]
    assert (req.take_profit, req.stop_loss) == (Decimal("66000"), Decimal("57000")) and not req.reduce_only
    assert (res.take_profit, res.stop_loss) == (Decimal("66000"), Decimal("57000"))
    names = [e["event"] for e in events() if e.get("signal_id") == "sig-f"]
    assert names[:1] == ["signal.received"] and "order.placed" in names and "order.filled" in names


def test_avg_price_zero_takes_the_fill_price_from_the_executions_not_a_quote(tmp_path, events):
    w = World(tmp_path)
    w.reader.default = ("61000", "61000", "0.0001", "ws")  # a quote that must not become the fill price
    link = order_link_id("sig-z", "entry", prefix="x")
    # The stream shows nothing; REST says Filled with avgPrice 0; the executions know the price.
    w.gateway.orders[link] = Order(orderId=f"oid-{link}", orderLinkId=link, symbol="BTCUSDT", side="Buy",
                                   orderType="Market", orderStatus="Filled", qty="0.01", avgPrice="0", cumExecQty="0.01",
                                   createdTime=T0)
    w.gateway.executions = [execution(link, f"oid-{link}", "0.004", "60990", "a"),
                            execution(link, f"oid-{link}", "0.006", "60980", "b"),
                            execution("other", "oid-other", "1", "1", "c")]
    w.entry("sig-z", qty=Decimal("0.01"))
    res = w.final("sig-z")
    assert res.outcome is ExecutionOutcome.FILLED
    assert res.avg_price == Decimal("60984") and res.price_source == "executions"
    filled = [e for e in events() if e["event"] == "order.filled"][0]
    assert filled["avg_price"] == "60984" and filled["confirmed_via"] == "rest"


def test_a_flat_signal_goes_to_panic_and_its_result_says_reduce_only(tmp_path):
    w = World(tmp_path)
    w.state[0] = snapshot(wallet(), positions=(position("BTCUSDT", Side.BUY, "0.01"),))
    pending = w.signal("sig-c", direction="flat")
    assert pending.outcome is ExecutionOutcome.PENDING and pending.reduce_only
    res = w.final("sig-c")
    assert res.outcome is ExecutionOutcome.CLOSED and res.reduce_only is True
    assert res.avg_price == Decimal("60010") and res.filled_qty == Decimal("0.01")
    asked = w.panic.got(ClosePosition).get()
    assert len(asked) == 1 and asked[0].signal_id == "sig-c" and asked[0].symbol == "BTCUSDT"
    check = w.risk.got(RiskCheck).get()[0]
    assert check.is_close and check.intent.reduce_only and check.intent.side is Side.SELL
    assert w.gateway.calls.get("create_order") is None  # the Executor never places a close itself


def test_entry_results_carry_reduce_only_false_as_sent(tmp_path):
    w = World(tmp_path)
    res = w.entry("sig-e", qty=Decimal("0.01"))
    assert res.reduce_only is False and w.gateway.created[0].reduce_only is False


def test_halted_does_nothing_and_reducing_lets_only_closes_through(tmp_path):
    w = World(tmp_path)
    w.set_state(TradingState.HALTED)
    assert w.entry("sig-h", qty=Decimal("0.01")).check == "trading_state"
    assert w.signal("sig-h2", direction="flat").check == "trading_state"
    assert w.risk.got(RiskCheck).get() == [] and w.panic.got(ClosePosition).get() == []
    w.set_state(TradingState.REDUCING)
    assert w.entry("sig-r", qty=Decimal("0.01")).check == "trading_state"
    w.state[0] = snapshot(wallet(), positions=(position("BTCUSDT", Side.SELL, "0.01"),))
    assert w.signal("sig-r2", direction="flat").outcome is ExecutionOutcome.PENDING
    assert w.final("sig-r2").outcome is ExecutionOutcome.CLOSED
    assert w.gateway.calls.get("create_order") is None


def test_risk_block_stops_the_signal(tmp_path):
    w = World(tmp_path, allow=False)
    res = w.entry("sig-b", qty=Decimal("0.01"))
    assert res.outcome is ExecutionOutcome.BLOCKED and res.check == "daily_loss"
    assert w.gateway.calls.get("create_order") is None


def test_stale_price_and_price_deviation_block_entries(tmp_path):
    w = World(tmp_path)
    w.reader.stale = True
    assert w.entry("sig-s", qty=Decimal("0.01")).check == "price"
    w.reader.stale = False
    res = w.entry("sig-d", qty=Decimal("0.01"), price=Decimal("58000"))  # market 60000: 3.4 % away
    assert res.check == "price_deviation"
    assert w.gateway.calls.get("create_order") is None


def test_a_slow_fill_blocks_only_its_own_symbol_and_gives_up_with_an_error_event(tmp_path, events):
    w = World(tmp_path)
    w.entry("sig-slow", qty=Decimal("0.01"))
    # While BTCUSDT waits for its fill, ETHUSDT goes through and a second BTCUSDT signal is held back.
    assert w.entry("sig-btc2", qty=Decimal("0.01")).check == "order_in_flight"
    assert w.entry("sig-eth", symbol="ETHUSDT", qty=Decimal("0.01")).outcome is ExecutionOutcome.PENDING
    res = w.final("sig-slow", timeout=10)
    assert res.outcome is ExecutionOutcome.UNCONFIRMED
    assert any(e["event"] == "order.fill_unconfirmed" and e["signal_id"] == "sig-slow" for e in events())
    # The symbol is free again afterwards.
    assert w.entry("sig-btc3", qty=Decimal("0.01")).outcome is ExecutionOutcome.PENDING


def test_an_entry_without_tp_sl_gets_the_configured_ones_in_the_same_request(tmp_path):
    w = World(tmp_path, default_stop_loss_pct=Decimal("2"), default_take_profit_pct=Decimal("4"))
    w.entry("sig-l", qty=Decimal("0.01"))
    w.entry("sig-s", symbol="ETHUSDT", direction="short", qty=Decimal("0.01"), stop_loss=Decimal("61000"))
    long_req, short_req = w.gateway.created
    assert (long_req.take_profit, long_req.stop_loss) == (Decimal("62400"), Decimal("58800"))
    # The signal's own level wins; only the missing one is filled in.
    assert (short_req.take_profit, short_req.stop_loss) == (Decimal("57600"), Decimal("61000"))
    assert w.result("sig-l").stop_loss == Decimal("58800")


def test_configured_tp_sl_are_on_the_tick_in_the_request_and_the_result_as_the_venue_holds_them(tmp_path):
    w = World(tmp_path, default_stop_loss_pct=Decimal("0.54321"), default_take_profit_pct=Decimal("1.23456"))
    w.entry("sig-t", qty=Decimal("0.01"))
    (req,) = w.gateway.created
    # 60000 +1.23456 % = 60740.7360 and -0.54321 % = 59674.0740: the nearest 0.1 ticks.
    assert (req.take_profit, req.stop_loss) == (Decimal("60740.7"), Decimal("59674.1"))
    assert (w.result("sig-t").take_profit, w.result("sig-t").stop_loss) == (req.take_profit, req.stop_loss)


def test_a_gateway_that_refuses_trading_blocks_before_risk_is_asked(tmp_path):
    w = World(tmp_path)
    w.gateway.problems = ["venue mainnet needs trading_mode live"]
    res = w.entry("sig-m", qty=Decimal("0.01"))
    assert res.outcome is ExecutionOutcome.BLOCKED and res.check == "mode" and "mainnet" in res.reason
    assert w.risk.got(RiskCheck).get() == [] and w.gateway.calls.get("create_order") is None


def test_an_entry_decided_longer_ago_than_the_limit_is_refused_before_any_peer_or_venue_call(tmp_path, events):
    # The reviewed design had no age limit: a signal that waited in a queue (behind a slow venue
    # call, or a late delivery) became an order on a market that had moved on.
    w = World(tmp_path, max_signal_age_s=Decimal("10"))
    made = now_utc()
    stale = w.entry("sig-old", qty=Decimal("0.01"), created_at=made - timedelta(seconds=11))
    assert stale.outcome is ExecutionOutcome.BLOCKED and stale.check == "signal_age" and "11." in stale.reason
    ahead = w.entry("sig-ahead", qty=Decimal("0.01"), created_at=made + timedelta(seconds=30))
    assert ahead.outcome is ExecutionOutcome.BLOCKED and ahead.check == "signal_age" and "ahead" in ahead.reason
    assert w.store.got(object).get() == [] and w.risk.got(RiskCheck).get() == []
    assert w.gateway.calls.get("create_order") is None
    (line,) = wait_until(lambda: [e for e in events() if e["event"] == "executor.blocked" and e["signal_id"] == "sig-old"],
                         timeout=5, what="executor.blocked for sig-old")
    assert line["check"] == "signal_age" and line["age_s"] > 10 and line["limit_s"] == 10
    # Within the limit it goes through as any other entry.
    fresh = w.entry("sig-fresh", qty=Decimal("0.01"), created_at=made - timedelta(seconds=5))
    assert fresh.outcome is ExecutionOutcome.PENDING and len(w.gateway.created) == 1


def test_a_restarted_executor_holds_entries_while_its_predecessors_could_still_be_in_flight(tmp_path, events):
    # A restart forgot every entry of the Executor before it: one still on the wire, or accepted and
    # not yet in the positions Risk judges by, did not stop a second entry on the same symbol.
    quick = ExchangeConfig(rest_timeout_s=Decimal("0.5"), order_lookup_window_s=Decimal("0.5"))
    w = World(tmp_path, generation=1, exchange=quick)  # fill_timeout_s 1.5: a 2.5 s hold
    held = w.entry("sig-after-restart", qty=Decimal("0.01"))
    assert held.outcome is ExecutionOutcome.BLOCKED and held.check == "restart_settling", held
    assert w.gateway.calls.get("create_order") is None
    w.state[0] = snapshot(wallet(), positions=(position("BTCUSDT", Side.BUY, "0.01"),))
    w.signal("sig-out-now", direction="flat")  # getting out is never held
    assert w.final("sig-out-now").outcome is ExecutionOutcome.CLOSED
    assert wait_until(lambda: any(e["event"] == "executor.restart_hold" and e["hold_s"] == 2.5 for e in events()),
                      timeout=5, what="executor.restart_hold")
    later = wait_until(lambda: (r := w.entry(f"sig-later-{time.monotonic_ns()}", qty=Decimal("0.01"))).check
                       != "restart_settling" and r, timeout=6, interval=0.25, what="entries resumed")
    assert later.outcome is ExecutionOutcome.PENDING and later.order_id
    # A first start (generation 0) holds nothing.
    fresh = World(tmp_path / "fresh")
    assert fresh.entry("sig-first-start", qty=Decimal("0.01")).order_id


def test_a_close_is_never_refused_for_its_age(tmp_path):
    w = World(tmp_path, max_signal_age_s=Decimal("10"))
    w.state[0] = snapshot(wallet(), positions=(position("BTCUSDT", Side.BUY, "0.01"),))
    w.signal("sig-flat-old", direction="flat", created_at=now_utc() - timedelta(hours=1))
    assert w.final("sig-flat-old").outcome is ExecutionOutcome.CLOSED
    assert len(w.panic.got(ClosePosition).get()) == 1


def test_a_flat_and_a_status_query_never_wait_behind_an_entry_whose_create_hangs(tmp_path):
    # The reviewed design made the create in the Executor's own mailbox: while the venue took its
    # read timeout and lookup window (up to 15 s by default) to answer one entry, a FLAT for any
    # other symbol waited behind it, exactly when the venue is slow and getting out matters.
    w = World(tmp_path)
    on_the_wire, answer = threading.Event(), threading.Event()

    def hung(req):
        on_the_wire.set()
        answer.wait(10)
        return FakeGateway.accepted(req)

    w.gateway.on_create = hung
    sent = w.ref.ask(Signal(signal_id="sig-hung", symbol="BTCUSDT", direction="long", qty=Decimal("0.01")), timeout=1)
    assert sent.outcome is ExecutionOutcome.PENDING and sent.order_id is None  # "sent", not yet answered
    assert on_the_wire.wait(5)
    w.state[0] = snapshot(wallet(), positions=(position("ETHUSDT", Side.BUY, "0.1"),))
    out = w.ref.ask(Signal(signal_id="sig-out-eth", symbol="ETHUSDT", direction="flat"), timeout=1)
    assert out.outcome is ExecutionOutcome.PENDING and out.reduce_only
    assert w.final("sig-out-eth", timeout=2).outcome is ExecutionOutcome.CLOSED
    assert [m.symbol for m in w.panic.got(ClosePosition).get()] == ["ETHUSDT"]
    # The hung entry's symbol takes no other entry meanwhile: it counts as in flight.
    again = w.ref.ask(Signal(signal_id="sig-btc-2", symbol="BTCUSDT", direction="long", qty=Decimal("0.01")), timeout=1)
    assert again.outcome is ExecutionOutcome.BLOCKED and again.check == "order_in_flight"
    assert w.result("sig-hung").order_id is None
    answer.set()
    placed = wait_until(lambda: (r := w.result("sig-hung")).order_id and r, timeout=5, what="the hung create answered")
    assert placed.order_id == f"oid-{placed.order_link_id}" and w.gateway.calls["create_order"] == 1


def test_a_fill_seen_on_the_stream_is_confirmed_while_its_venue_check_waits_behind_a_hung_create(tmp_path):
    """Once an order's stream wait is over, each check also asks the venue. That question queues on
    the venue worker behind any slow create; the checks of the stream must go on meanwhile, or the
    order's fill (and its symbol) waits for an unrelated create."""
    w = World(tmp_path, fill_timeout_s=Decimal("20"))
    placed = w.entry("sig-btc", qty=Decimal("0.01"))  # no fill on the stream yet
    on_the_wire, answer = threading.Event(), threading.Event()

    def hang_eth(req):
        if req.symbol == "ETHUSDT":
            on_the_wire.set()
            answer.wait(10)
        return FakeGateway.accepted(req)

    w.gateway.on_create = hang_eth
    try:
        w.signal("sig-eth", symbol="ETHUSDT", qty=Decimal("0.1"))
        assert on_the_wire.wait(5)
        # Past the 0.3 s stream wait: sig-btc's venue question is queued behind the hung create.
        asked = len(w.store.got(GetSnapshot).get())
        wait_until(lambda: len(w.store.got(GetSnapshot).get()) >= asked + 4, timeout=5,
                   what="sig-btc's stream checks going on")
        w.fill_on_stream(placed.order_link_id, ("0.01", "60002"))
        res = wait_until(lambda: (r := w.result("sig-btc")).final and r, timeout=3, what="sig-btc confirmed")
        assert res.outcome is ExecutionOutcome.FILLED and res.price_source == "executions"
        assert w.result("sig-eth").order_id is None  # the create still hangs
    finally:
        answer.set()


def test_a_flat_is_not_held_back_by_an_unconfirmed_entry_but_a_second_close_is(tmp_path):
    w = World(tmp_path)
    release = __import__("threading").Event()

    def slow_close(m):
        if isinstance(m, ClosePosition):
            release.wait(5)
            return CloseResult(symbol=m.symbol, outcome=CloseOutcome.CLOSED, signal_id=m.signal_id)
        return None

    w.panic_reply = slow_close
    w.entry("sig-in", qty=Decimal("0.01"))  # no fill on the stream: stays in flight
    w.state[0] = snapshot(wallet(), positions=(position("BTCUSDT", Side.BUY, "0.01"),))
    assert w.signal("sig-out", direction="flat").outcome is ExecutionOutcome.PENDING
    assert w.signal("sig-out2", direction="flat").check == "close_in_flight"
    release.set()
    assert w.final("sig-out").outcome is ExecutionOutcome.CLOSED


def test_a_repeat_while_the_first_is_still_confirming_places_nothing(tmp_path):
    w = World(tmp_path)
    first = w.entry("sig-p", qty=Decimal("0.01"))
    again = w.entry("sig-p", qty=Decimal("0.01"))
    assert first.outcome is again.outcome is ExecutionOutcome.PENDING
    assert again.order_link_id == first.order_link_id and w.gateway.calls["create_order"] == 1


def test_a_venue_rejection_is_a_result_and_a_repeat_does_not_resend(tmp_path, events):
    from infra.bybit import Rejected

    w = World(tmp_path)

    def reject(req):
        raise Rejected(110007, "ab not enough for new order")

    w.gateway.on_create = reject
    res = w.entry("sig-x", qty=Decimal("0.01"))
    assert res.outcome is ExecutionOutcome.REJECTED and "not enough" in res.reason
    assert w.entry("sig-x", qty=Decimal("0.01")).outcome is ExecutionOutcome.REJECTED
    assert w.gateway.calls["create_order"] == 1
    assert any(e["event"] == "order.rejected" and e["signal_id"] == "sig-x" for e in events())


def test_a_risk_actor_that_does_not_answer_in_time_blocks(tmp_path):
    w = World(tmp_path, ask_timeout_s=Decimal("0.2"))
    slow = __import__("threading").Event()
    w.allow = True
    original = w._risk

    def stuck(m):
        if isinstance(m, RiskCheck):
            slow.wait(1.0)
        return original(m)

    w.risk_reply = stuck
    res = w.entry("sig-t", qty=Decimal("0.01"))
    assert res.outcome is ExecutionOutcome.BLOCKED and res.check == "risk_unavailable"
    assert w.gateway.calls.get("create_order") is None


def test_only_recent_executions_of_the_order_count_newest_first():
    from datetime import timedelta

    from actors.executor import _executions_of

    now = T0 + timedelta(hours=1)
    execs = (
        execution("l1", "o1", "5", "1", "old", at=now - timedelta(minutes=5)),  # before the look-back
        execution("other", "o2", "1", "1", "x", at=now),
        execution("l1", "o1", "0.01", "60000", "new", at=now),
    )
    got = _executions_of(execs, "l1", "o1", since=now - timedelta(minutes=1))
    assert [e.exec_id for e in got] == ["new"]


def test_a_close_that_panic_does_not_answer_properly_is_a_failed_result_not_a_dead_executor(tmp_path, events):
    w = World(tmp_path)
    w.panic_reply = lambda m: None  # e.g. a Panic that does not handle ClosePosition
    w.state[0] = snapshot(wallet(), positions=(position("BTCUSDT", Side.BUY, "0.01"),))
    w.signal("sig-nc", direction="flat")
    res = w.final("sig-nc")
    assert res.outcome is ExecutionOutcome.FAILED and res.reduce_only is True
    assert any(e["event"] == "executor.close_failed" for e in events())
    assert w.ref.is_alive() and w.entry("sig-next", qty=Decimal("0.01")).outcome is ExecutionOutcome.PENDING


def test_the_log_writer_is_held_while_the_signal_is_decided_and_released_once_the_create_is_handed_over(tmp_path):
    """Rendering log lines would compete with the pre-trade path for the interpreter lock: the
    Executor holds the writer from the signal until the create is handed to its venue worker, and
    never leaves it held."""
    import infra.logging as il

    w = World(tmp_path)
    seen: dict[str, bool] = {}

    def risk(m):
        if isinstance(m, RiskCheck):
            seen["held_during_risk"] = not il._not_held.is_set()
        return w._risk(m)

    w.risk_reply = risk
    assert w.entry("sig-held", qty=Decimal("0.01")).order_id is not None
    assert seen == {"held_during_risk": True}
    assert il._not_held.is_set()
    w.set_state(TradingState.HALTED)
    assert w.entry("sig-halted", qty=Decimal("0.01")).outcome is ExecutionOutcome.BLOCKED
    assert il._not_held.is_set()  # a blocked signal releases it too


def test_entries_still_awaiting_their_fill_count_against_the_exposure_limits(tmp_path):
    """Risk judged each entry from the StateStore's portfolio only, which shows a position once its fill
    arrives: a burst of entries on different symbols, each within the limits alone, passed together
    past max_total_exposure_usd and max_open_positions. Entries in flight now count."""
    limits = RiskConfig(max_daily_loss_usd=Decimal("100"), max_position_usd=Decimal("1000"),
                        max_total_exposure_usd=Decimal("1500"), max_open_positions=2, max_leverage=Decimal("5"),
                        max_funding_cost_usd=Decimal("10"))
    engine = RiskEngine(limits, clock=lambda: T0)
    engine.tracker.seed(RiskDay(day=T0.date(), anchor_balance=Decimal("10000"), peak_equity=Decimal("10000"),
                                latched=False, latch_reason=None, latched_at=None, seed_source="venue"))
    engine.trading_state = TradingState.ACTIVE
    w = World(tmp_path, fill_timeout_s=Decimal("20"))
    w.risk_reply = lambda m: engine.check(m) if isinstance(m, RiskCheck) else None
    # Each 0.015 x 60000 = 900 USD: alone within every limit; two make 1800 > 1500.
    assert w.entry("sig-x1", symbol="BTCUSDT", qty=Decimal("0.015")).outcome is ExecutionOutcome.PENDING
    second = w.entry("sig-x2", symbol="ETHUSDT", qty=Decimal("0.015"))
    assert second.outcome is ExecutionOutcome.BLOCKED and second.check == "gross_exposure", second
    assert w.entry("sig-x3", symbol="SOLUSDT", qty=Decimal("0.005")).outcome is ExecutionOutcome.PENDING  # 1200
    third = w.entry("sig-x4", symbol="XRPUSDT", qty=Decimal("0.001"))
    assert third.outcome is ExecutionOutcome.BLOCKED and third.check == "max_open_positions", third
    assert w.gateway.calls["create_order"] == 2


def test_a_close_panic_answers_late_is_not_reported_failed_and_its_symbol_stays_closing(tmp_path, events):
    """Panic's mailbox may be busy (a panic, a reconciliation) past close_timeout_s. The Executor then
    logged executor.close_failed and recorded FAILED - "TP/SL left in place" - and freed the symbol,
    while the close still ran and flattened the position a moment later."""
    w = World(tmp_path, close_timeout_s=Decimal("0.3"))
    release = threading.Event()

    def late_close(m):
        if isinstance(m, ClosePosition):
            release.wait(10)
            return CloseResult(symbol=m.symbol, outcome=CloseOutcome.CLOSED, signal_id=m.signal_id, order_id="close-late",
                               closed_qty=Decimal("0.01"), avg_price=Decimal("60010"))
        return None

    w.panic_reply = late_close
    w.state[0] = snapshot(wallet(), positions=(position("BTCUSDT", Side.BUY, "0.01"),))
    assert w.signal("sig-late", direction="flat").outcome is ExecutionOutcome.PENDING
    wait_until(lambda: any(e["event"] == "executor.close_unanswered" for e in events()), timeout=5,
               what="the close reported unanswered")
    assert w.result("sig-late").outcome is ExecutionOutcome.UNKNOWN
    assert w.signal("sig-late2", direction="flat").check == "close_in_flight"
    release.set()
    res = wait_until(lambda: (r := w.result("sig-late")).outcome is ExecutionOutcome.CLOSED and r, timeout=5,
                     what="the late answer recorded")
    assert res.order_id == "close-late" and res.filled_qty == Decimal("0.01")
    assert not [e for e in events() if e["event"] == "executor.close_failed"]
    assert w.signal("sig-late3", direction="flat").outcome is ExecutionOutcome.PENDING  # the symbol is free again


def test_a_restarted_executor_learns_the_current_trading_state_from_panic(tmp_path, events):
    """Panic tells the trading state only when it changes. An Executor restarted by the Supervisor
    while the node was ACTIVE started HALTED and stayed so - every signal blocked with "trading is
    HALTED" while the node reported ACTIVE - until the next change, which may never come."""
    w = World(tmp_path)
    w.panic_reply = lambda m: (TradingStateChanged(state=TradingState.ACTIVE, previous=TradingState.HALTED,
                                                   reason="state seeded, data fresh, risk seeded")
                               if isinstance(m, GetTradingState) else None)
    w.ref.stop()
    node = NodeConfig(data_dir=tmp_path / "data", risk=RiskConfig(fill_stream_wait_s=Decimal("0.3"),
                                                                  fill_timeout_s=Decimal("1.5")),
                      exchange=ExchangeConfig(rest_timeout_s=Decimal("0.5"), order_lookup_window_s=Decimal("0.5")))
    ctx = ActorContext(config=AppConfig(node=node, credentials=None, source="test"), directory=w.directory, generation=1)
    w.ref = Executor.start(ctx, reader=w.reader, gateway=w.gateway)
    w.directory.register(Role.EXECUTOR, w.ref)
    first = w.entry("sig-rs-held", qty=Decimal("0.01"))
    assert first.check == "restart_settling", first  # not "trading is HALTED": the state was synced at start
    res = wait_until(lambda: (r := w.entry(f"sig-rs-{len(events())}", qty=Decimal("0.01"))).outcome
                     is not ExecutionOutcome.BLOCKED and r, timeout=8, interval=0.25,
                     what="the restarted Executor trading after its hold")
    assert res.outcome is ExecutionOutcome.PENDING
    assert any(e["event"] == "executor.trading_state_synced" and e["state"] == "ACTIVE" for e in events())


def test_a_duplicate_order_link_id_held_by_a_different_order_is_not_this_signals_fill(tmp_path, events):
    """110072 resolves to the order that holds the orderLinkId. When a signal id is used again for a
    different intent (a strategy restarted and counting from 1 again), that order is an old SELL of
    another size, yet its fill was reported as this LONG signal's fill: FILLED, nothing placed."""
    w = World(tmp_path)
    link = order_link_id("sig-reused", "entry", prefix="x")
    old = Order(orderId="o-old", orderLinkId=link, symbol="BTCUSDT", side="Sell", orderType="Market",
                orderStatus="Filled", qty="0.5", avgPrice="58000", cumExecQty="0.5", createdTime=T0)
    w.gateway.on_create = lambda req: OrderAck(symbol=req.symbol, order_id="o-old", order_link_id=req.order_link_id,
                                               resolution=Resolution.DUPLICATE, order=old, qty=old.qty)
    res = w.entry("sig-reused", qty=Decimal("0.01"))
    assert res.outcome is ExecutionOutcome.REJECTED, res
    assert "o-old" in res.reason and not res.retryable
    assert w.result("sig-reused").outcome is ExecutionOutcome.REJECTED
    assert any(e["event"] == "order.link_id_taken" for e in events())
    assert w.entry("sig-other", qty=Decimal("0.01")).outcome is not ExecutionOutcome.BLOCKED  # the symbol is free
