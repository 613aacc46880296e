"""Risk: the checks without threads (RiskEngine), then the actor with mocked peers and a real DuckDB file."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from actors.base import ActorContext, Directory, Role
from actors.risk import DailyLossTracker, NotSeeded, Risk, RiskEngine, Rollover, Trip, increases_exposure
from infra.bybit.models import ClosedPnl
from infra.config import AppConfig, NodeConfig, RiskConfig
from infra.store import HistoryStore
from infra.store.risk_state import RiskDay, RiskStateStore
from messages.commands import Panic
from messages.control import ReadinessChanged, RiskStatus, TradingState, TradingStateChanged
from messages.queries import GetSnapshot, GetTradingState
from messages.trading import OrderIntent, PortfolioSnapshot, RiskCheck
from messages.types import Side
from tests.helpers import wait_until
from tests.trading_fakes import T0, Peer, position, snapshot, wallet

LIMITS = RiskConfig(
    max_daily_loss_usd=Decimal("100"),
    max_position_usd=Decimal("1000"),
    max_total_exposure_usd=Decimal("2000"),
    max_open_positions=2,
    max_leverage=Decimal("5"),
    min_balance_usd=Decimal("50"),
    max_drawdown_pct=Decimal("5"),
    funding_horizon_hours=Decimal("24"),
    funding_interval_hours=Decimal("8"),
    max_funding_cost_usd=Decimal("1"),
    default_order_usd=Decimal("100"),
)


def day_row(anchor: str = "10000", peak: str | None = "10000", latched: bool = False, day: date = T0.date()) -> RiskDay:
    return RiskDay(day=day, anchor_balance=Decimal(anchor), peak_equity=None if peak is None else Decimal(peak),
                   latched=latched, latch_reason="earlier" if latched else None, latched_at=T0 if latched else None,
                   seed_source="venue")


def seeded_engine(now: datetime = T0, **row) -> RiskEngine:
    engine = RiskEngine(LIMITS, clock=lambda: now)
    engine.tracker.seed(day_row(**row))
    engine.trading_state = TradingState.ACTIVE
    return engine


def portfolio(equity: str = "10000", balance: str | None = None, available: str | None = None,
              positions=()) -> PortfolioSnapshot:
    return PortfolioSnapshot.from_state(snapshot(wallet(equity, balance, available), tuple(positions)))


def entry(side: Side = Side.BUY, qty: str = "0.01", price: str | None = "60000", symbol: str = "BTCUSDT",
          state: TradingState = TradingState.ACTIVE, funding: str | None = "0.0001", pf: PortfolioSnapshot | None = None,
          reduce_only: bool = False, is_close: bool = False) -> RiskCheck:
    return RiskCheck(
        signal_id="sig-1",
        intent=OrderIntent(symbol=symbol, side=side, qty=Decimal(qty), price=None if price is None else Decimal(price),
                           reduce_only=reduce_only),
        portfolio=pf or portfolio(),
        trading_state=state,
        funding_rate=None if funding is None else Decimal(funding),
        is_close=is_close,
    )


# --- DATA-016: no PnL past the seed guard ------------------------------------------------------


def test_an_unseeded_tracker_has_no_pnl_to_read():
    """The reviewed design read `daily_pnl` directly: 0.0 when the seed failed, so `pnl > -limit`
    passed. Here the same read raises, and nothing else exposes the anchor."""
    tracker = DailyLossTracker()
    tracker.unseed("seed failed: venue down")
    reviewed_loss_check_passes = lambda: tracker.daily_pnl(Decimal("10000")) > -Decimal("100")  # noqa: E731
    with pytest.raises(NotSeeded, match="venue down"):
        reviewed_loss_check_passes()
    with pytest.raises(NotSeeded):
        tracker.drawdown_pct(Decimal("10000"))
    with pytest.raises(NotSeeded):
        tracker.row()
    public = [n for n in dir(tracker) if not n.startswith("_")]
    assert not [n for n in public if "anchor" in n or n == "day_pnl"]


def test_seed_failed_blocks_every_entry_even_when_the_figures_look_harmless():
    engine = RiskEngine(LIMITS, clock=lambda: T0)
    engine.trading_state = TradingState.ACTIVE
    engine.tracker.unseed("seed failed: ConnectionError")
    decision = engine.check(entry())
    assert not decision.allowed and decision.check == "seed"
    assert "ConnectionError" in decision.reason


def test_seeded_entry_within_limits_is_allowed_with_its_figures():
    decision = seeded_engine().check(entry())
    assert decision.allowed, decision
    assert decision.figures["position_usd"] == "600"
    assert decision.figures["daily_pnl"] == "0"


# --- each limit -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "engine_row", "check"),
    [
        (dict(pf=portfolio("9900")), {}, "daily_loss"),
        (dict(), dict(latched=True), "daily_loss_latch"),
        (dict(pf=portfolio("9940")), dict(anchor="9900", peak="10500"), "drawdown"),
        (dict(pf=portfolio("10000", available="40")), {}, "min_balance"),
        (dict(symbol="SOLUSDT", pf=portfolio(positions=[position("BTCUSDT", Side.BUY, "0.001"),
                                                          position("ETHUSDT", Side.SELL, "0.01", "3000")])),
         {}, "max_open_positions"),
        (dict(qty="0.02"), {}, "position_exposure"),
        (dict(qty="0.015", pf=portfolio("150", available="150")), dict(anchor="150", peak="150"), "leverage"),
        (dict(funding="0.001"), {}, "funding"),
        (dict(funding=None), {}, "funding"),
        (dict(price=None), {}, "price"),
    ],
)
def test_each_limit_blocks_an_entry(kwargs, engine_row, check):
    decision = seeded_engine(**engine_row).check(entry(**kwargs))
    assert not decision.allowed, decision
    assert decision.check == check, decision


def test_gross_exposure_is_every_position_after_the_order():
    engine = RiskEngine(LIMITS.model_copy(update={"max_open_positions": 3}), clock=lambda: T0)
    engine.tracker.seed(day_row())
    engine.trading_state = TradingState.ACTIVE
    pf = portfolio(positions=[position("BTCUSDT", Side.BUY, "0.016", "60000"),
                              position("SOLUSDT", Side.SELL, "10", "60")])
    # 960 + 600 + 0.1 * 3000 = 1860 <= 2000; 960 + 600 + 0.2 * 3000 = 2160 > 2000
    assert engine.check(entry(symbol="ETHUSDT", qty="0.1", price="3000", pf=pf)).allowed
    decision = engine.check(entry(symbol="ETHUSDT", qty="0.2", price="3000", pf=pf))
    assert decision.check == "gross_exposure" and decision.figures["gross_usd"] == "2160"


def test_funding_a_short_receives_is_no_cost():
    # Positive funding: longs pay, shorts receive.
    assert seeded_engine().check(entry(side=Side.SELL, funding="0.001")).allowed
    assert not seeded_engine().check(entry(side=Side.BUY, funding="0.001")).allowed


# --- trading state and the close rule (DATA-024) -----------------------------------------------------------


def test_risk_starts_halted_and_the_stricter_of_the_two_views_counts():
    engine = RiskEngine(LIMITS, clock=lambda: T0)
    engine.tracker.seed(day_row())
    # Panic has not told Risk anything yet: the Executor's ACTIVE does not open the gate.
    assert engine.check(entry(state=TradingState.ACTIVE)).check == "trading_state"
    engine.trading_state = TradingState.REDUCING
    assert engine.check(entry(state=TradingState.ACTIVE)).check == "trading_state"
    engine.trading_state = TradingState.ACTIVE
    assert engine.check(entry(state=TradingState.ACTIVE)).allowed


def test_halted_blocks_entries_and_closes():
    engine = seeded_engine()
    assert engine.check(entry(state=TradingState.HALTED)).check == "trading_state"
    pf = portfolio(positions=[position("BTCUSDT", Side.BUY, "0.01")])
    close = entry(side=Side.SELL, qty="0.01", state=TradingState.HALTED, pf=pf, reduce_only=True, is_close=True)
    assert engine.check(close).check == "trading_state"


def test_reducing_blocks_entries_but_allows_a_close_even_unseeded_and_latched():
    pf = portfolio(positions=[position("BTCUSDT", Side.BUY, "0.01")])
    engine = seeded_engine(latched=True)
    assert engine.check(entry(state=TradingState.REDUCING, pf=pf)).check == "trading_state"
    close = entry(side=Side.SELL, qty="0.01", state=TradingState.REDUCING, pf=pf, reduce_only=True, is_close=True,
                  funding=None)
    assert engine.check(close).allowed
    engine.tracker.unseed("seed failed")
    assert engine.check(close).allowed


def test_a_flat_that_would_increase_exposure_is_blocked():
    pf = portfolio(positions=[position("BTCUSDT", Side.BUY, "0.01")])
    engine = seeded_engine()
    same_side = entry(side=Side.BUY, qty="0.01", pf=pf, reduce_only=True, is_close=True)
    decision = engine.check(same_side)
    assert not decision.allowed and decision.check == "close_increases_exposure"
    flips = entry(side=Side.SELL, qty="0.02", pf=pf, reduce_only=True, is_close=True)
    assert engine.check(flips).check == "close_increases_exposure"


@pytest.mark.parametrize(("current", "order", "grows"), [
    ("0", "1", True), ("1", "1", True), ("1", "-1", False), ("1", "-0.5", False),
    ("1", "-2", True), ("-1", "1", False), ("-1", "-0.1", True), ("0", "0", False),
])
def test_increases_exposure(current, order, grows):
    assert increases_exposure(Decimal(current), Decimal(order)) is grows


# --- the day's bookkeeping -----------------------------------------------------------------------------------


def test_evaluate_trips_the_latch_at_the_limit_once_and_raises_the_peak():
    engine = seeded_engine(peak="10000")
    assert engine.evaluate(portfolio("10050")) == []
    assert engine.tracker.peak_equity() == Decimal("10050")
    actions = engine.evaluate(portfolio("9899.5"))
    assert len(actions) == 1 and isinstance(actions[0], Trip)
    assert actions[0].row.latched and "-100.5" in actions[0].reason
    assert engine.evaluate(portfolio("9800")) == []  # once
    assert engine.check(entry(pf=portfolio("10000"))).check == "daily_loss_latch"


def test_midnight_utc_rolls_the_anchor_and_releases_the_latch():
    now = [T0]
    engine = RiskEngine(LIMITS, clock=lambda: now[0])
    engine.tracker.seed(day_row(anchor="10000", latched=True))
    engine.trading_state = TradingState.ACTIVE
    now[0] = datetime(2026, 12, 2, 0, 0, 1, tzinfo=timezone.utc)
    actions = engine.evaluate(portfolio("9850", balance="9860"))
    assert isinstance(actions[0], Rollover) and actions[0].was_latched
    assert actions[0].row.day == date(2026, 12, 2) and actions[0].row.anchor_balance == Decimal("9860")
    assert not engine.tracker.latched
    assert engine.check(entry(pf=portfolio("9850", balance="9860"))).allowed


def test_midnight_without_a_wallet_unseeds():
    now = [T0]
    engine = RiskEngine(LIMITS, clock=lambda: now[0])
    engine.tracker.seed(day_row())
    engine.trading_state = TradingState.ACTIVE
    now[0] = T0 + timedelta(days=1)
    actions = engine.evaluate(PortfolioSnapshot(None, None, None, ()))
    assert isinstance(actions[0], Rollover) and actions[0].row is None
    assert engine.check(entry(pf=PortfolioSnapshot(None, None, None, ()))).check == "wallet"
    assert engine.check(entry(pf=portfolio())).check == "seed"


def test_an_entry_after_midnight_is_not_judged_against_yesterdays_anchor():
    """The day rolls only in `evaluate` (a timer that needs a StateStore snapshot). Until it runs,
    e.g. while the StateStore does not answer, yesterday's anchor was used: after a +500 USD day,
    today's -150 USD (limit 100) read as +350 and the entry was allowed. Fail closed instead."""
    now = [T0]
    engine = RiskEngine(LIMITS, clock=lambda: now[0])
    engine.tracker.seed(day_row(anchor="10000", peak="10500"))
    engine.trading_state = TradingState.ACTIVE
    # Yesterday ended at 10500; today started from there and is now 150 USD down.
    pf = portfolio("10350", balance="10500")
    now[0] = datetime(2026, 12, 2, 0, 5, tzinfo=timezone.utc)
    decision = engine.check(entry(pf=pf))
    assert not decision.allowed, decision
    assert decision.check == "seed" and "2026-12-01" in decision.reason
    # Once the rollover has run, today's own anchor judges it: the loss limit.
    assert isinstance(engine.evaluate(portfolio("10450", balance="10500"))[0], Rollover)
    assert engine.check(entry(pf=portfolio("10450", balance="10500"))).allowed
    assert engine.check(entry(pf=pf)).check == "daily_loss"


def test_a_close_after_midnight_is_still_allowed_before_the_rollover():
    now = [datetime(2026, 12, 2, 0, 5, tzinfo=timezone.utc)]
    engine = RiskEngine(LIMITS, clock=lambda: now[0])
    engine.tracker.seed(day_row())
    engine.trading_state = TradingState.ACTIVE
    pf = portfolio(positions=[position("BTCUSDT", Side.BUY, "0.01")])
    assert engine.check(entry(side=Side.SELL, qty="0.01", pf=pf, is_close=True, reduce_only=True)).allowed


# --- the actor: seeding, persistence, the latch across a restart --------------------------------------------------


class SeedGateway:
    def __init__(self, equity: str = "10000", balance: str = "10000", closed: tuple[str, ...] = (), fail: bool = False):
        self.equity, self.balance, self.closed, self.fail = equity, balance, closed, fail
        self.calls = 0

    def get_wallet(self):
        self.calls += 1
        if self.fail:
            raise ConnectionError("venue down")
        return wallet(self.equity, self.balance)

    def get_closed_pnl(self, *, start_ms=None, end_ms=None, symbol=None):
        return [ClosedPnl(symbol="BTCUSDT", orderId=f"o{i}", side="Sell", qty="0.01", closedSize="0.01", closedPnl=pnl,
                          createdTime=T0, updatedTime=T0) for i, pnl in enumerate(self.closed)]


def make_ctx(tmp_path, directory: Directory, **risk) -> ActorContext:
    limits = LIMITS.model_copy(update={"evaluate_interval_s": Decimal("0.05"), **risk})
    node = NodeConfig(data_dir=tmp_path / "data", risk=limits)
    return ActorContext(config=AppConfig(node=node, credentials=None, source="test"), directory=directory)


def start_peers(directory: Directory, snap_wallet):
    """A StateStore that answers with whatever `snap_wallet[0]` is, and a Panic that records."""
    store = Peer.start(lambda m: snapshot(snap_wallet[0]) if isinstance(m, GetSnapshot) else None)
    directory.register(Role.STATE_STORE, store)
    panic_ref = Peer.start()
    directory.register(Role.PANIC, panic_ref)
    return panic_ref.proxy()


def start_risk(ctx: ActorContext, **kwargs):
    """A Risk actor that Panic (played by the test) has told: trading is ACTIVE."""
    ref = Risk.start(ctx, **kwargs)
    ref.tell(TradingStateChanged(state=TradingState.ACTIVE, previous=TradingState.HALTED, reason="test"))
    return ref


def risk_store(tmp_path) -> RiskStateStore:
    return RiskStateStore(HistoryStore(tmp_path / "data" / "sim.duckdb", owner="test"))


def test_seed_from_the_venue_subtracts_todays_closed_pnl(tmp_path):
    directory = Directory()
    panic = start_peers(directory, [wallet("10000", "9950")])
    ref = start_risk(make_ctx(tmp_path, directory), gateway=SeedGateway(balance="9950", closed=("-30", "-20")),
                     clock=lambda: T0)
    status = wait_until(lambda: [s for s in panic.got(RiskStatus).get() if s.seeded], what="seeded RiskStatus")[0]
    assert not status.latched
    row = risk_store(tmp_path).load(T0.date())
    assert row is not None and row.anchor_balance == Decimal("10000") and row.seed_source == "venue"
    # equity 9950 against an anchor of 10000: -50 today, within the limit.
    decision = ref.ask(entry(pf=portfolio("9950", "9950")), timeout=5)
    assert decision.allowed and decision.figures["daily_pnl"] == "-50"


def test_seed_failure_is_told_to_panic_and_blocks_entries(tmp_path, events):
    directory = Directory()
    panic = start_peers(directory, [wallet()])
    gateway = SeedGateway(fail=True)
    ref = start_risk(make_ctx(tmp_path, directory), gateway=gateway, clock=lambda: T0)
    status = wait_until(lambda: [s for s in panic.got(RiskStatus).get() if "seed failed" in s.reason],
                        what="RiskStatus of the failed seed")[0]
    assert not status.seeded and "venue down" in status.reason
    decision = ref.ask(entry(), timeout=5)
    assert not decision.allowed and decision.check == "seed"
    blocked = [e for e in events() if e["event"] == "risk.blocked"]
    assert blocked and blocked[-1]["check"] == "seed" and blocked[-1]["signal_id"] == "sig-1"
    assert any(e["event"] == "risk.seed_failed" for e in events())
    # A Panic that starts (or restarts) later is told the current status too.
    late_panic = Peer.start()
    directory.register(Role.PANIC, late_panic)
    wait_until(lambda: [s for s in late_panic.proxy().got(RiskStatus).get() if "venue down" in s.reason],
               what="status retold to a new Panic")
    panic = late_panic.proxy()
    # It keeps trying; once the venue answers, it is seeded.
    gateway.fail = False
    wait_until(lambda: any(s.seeded for s in panic.got(RiskStatus).get()), timeout=10, what="seeded after retry")
    assert ref.ask(entry(), timeout=5).allowed


@pytest.mark.timeout(30)
def test_the_latch_is_durable_before_panic_hears_of_it_and_survives_a_restart(tmp_path, events):
    directory = Directory()
    snap_wallet = [wallet("10000")]
    store_ref = Peer.start(lambda m: snapshot(snap_wallet[0]) if isinstance(m, GetSnapshot) else None)
    directory.register(Role.STATE_STORE, store_ref)
    durable_when_told: list[bool] = []

    def on_panic_message(m):
        if isinstance(m, Panic):
            row = risk_store(tmp_path).load(T0.date())
            durable_when_told.append(row is not None and row.latched)

    panic_ref = Peer.start(on_panic_message)
    directory.register(Role.PANIC, panic_ref)
    panic = panic_ref.proxy()
    ref = start_risk(make_ctx(tmp_path, directory), gateway=SeedGateway(), clock=lambda: T0)
    wait_until(lambda: [s for s in panic.got(RiskStatus).get() if s.seeded], what="seeded")
    snap_wallet[0] = wallet("9890")  # -110 today: past the 100 limit
    wait_until(lambda: panic.got(Panic).get(), what="Panic told")
    assert durable_when_told == [True]
    latched = [s for s in panic.got(RiskStatus).get() if s.latched]
    assert latched and "-110" in latched[0].reason
    assert [e for e in events() if e["event"] == "risk.latch_tripped"][0]["durable"] is True
    ref.stop()

    # A restart on the same day: the venue now shows no loss at all, but the latch stays.
    snap_wallet[0] = wallet("10000")
    panic_ref2 = Peer.start()
    directory.register(Role.PANIC, panic_ref2)
    ref2 = start_risk(make_ctx(tmp_path, directory), gateway=SeedGateway(), clock=lambda: T0)
    status = wait_until(lambda: [s for s in panic_ref2.proxy().got(RiskStatus).get() if s.seeded],
                        what="status after restart")[0]
    assert status.latched
    decision = ref2.ask(entry(), timeout=5)
    assert not decision.allowed and decision.check == "daily_loss_latch"


@pytest.mark.parametrize("value, text", [
    (None, "unknown"),
    (Decimal("0"), "0"),
    (Decimal("1E+4"), "10000"),  # plain notation, never an exponent
    (Decimal("60.000"), "60"),  # no trailing zeros
    (Decimal("0.60000000"), "0.6"),  # many digits, all zeros past the sixth: nothing to round
    (Decimal("0.12345678"), "0.123457"),  # at most six decimals
    (Decimal("-0.0000015"), "-0.000002"),
    (Decimal("0.0006"), "0.0006"),
])
def test_event_figures_are_plain_with_at_most_six_decimals(value, text):
    from actors.risk import _s

    assert _s(value) == text


def test_a_restarted_risk_learns_the_trading_state_although_its_seed_changes_nothing_at_panic(tmp_path):
    """Risk hears the trading state only from Panic's announcements of a change. A Risk restarted
    while the node was ACTIVE seeds at once from today's stored row, so the first status Panic hears
    from it is "seeded" - no change, no announcement - and the new Risk stayed HALTED, blocking every
    entry and close ("trading is HALTED") while the node reported ACTIVE."""
    from actors.panic import Panic as PanicActor

    directory = Directory()
    store = Peer.start(lambda m: snapshot(wallet("10000")) if isinstance(m, GetSnapshot) else None)
    directory.register(Role.STATE_STORE, store)
    ctx = make_ctx(tmp_path, directory)
    panic = PanicActor.start(ctx)
    directory.register(Role.PANIC, panic)
    first = Risk.start(ctx, gateway=SeedGateway(), clock=lambda: T0)
    directory.register(Role.RISK, first)
    panic.tell(ReadinessChanged(ready=True))
    wait_until(lambda: first.ask(entry(), timeout=5).allowed, timeout=10, what="the first Risk allowing entries")
    first.stop()
    # Only the seed may speak to Panic: no evaluation tick re-tells an unseeded status first.
    quiet = make_ctx(tmp_path, directory, evaluate_interval_s=Decimal("60"))
    second = Risk.start(quiet, gateway=SeedGateway(), clock=lambda: T0)
    directory.register(Role.RISK, second)
    decision = wait_until(lambda: (d := second.ask(entry(), timeout=5)).allowed and d, timeout=10,
                          what="the restarted Risk allowing entries")
    assert decision.allowed
    assert panic.ask(GetTradingState(), timeout=5).state is TradingState.ACTIVE
