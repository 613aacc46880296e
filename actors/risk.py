"""Risk: the daily loss tracker and the pre-trade checks.

`RiskEngine` holds the logic and is tested without threads; the `Risk`
actor binds it to a mailbox, seeds it from the venue, persists it and
re-reads equity on a timer.

Daily PnL is on equity, realised and unrealised: `equity - anchor`, where
the anchor is the wallet balance (realised basis) the UTC day started from.
Seeded mid-day it is today's wallet balance minus the venue's closed PnL
since 00:00 UTC, so unrealised PnL of positions still open counts in full
(also the part made before midnight). At 00:00 UTC the anchor becomes the
balance seen then, the peak equity starts again and the latch is released.

DATA-016 by construction: the anchor is private to `DailyLossTracker`, and
the only ways to reach today's PnL (`daily_pnl`, `drawdown_pct`) raise
`NotSeeded` while the seed has not succeeded. There is no raw figure to
read past the guard, and `RiskEngine.check` turns `NotSeeded` into a block.

Every check is answered from one `PortfolioSnapshot` the Executor took
from the StateStore, with the funding rate it read and the entries it has
in flight (counted as if filled): no exchange call, no second look at
anything. A decision is an event, `risk.allowed` or `risk.blocked`, with
the failed check and the figures it compared.

The close rule (DATA-024), explicit: an order that does not increase
exposure (it shrinks the position toward flat, never past it) is allowed
whenever trading is ACTIVE or REDUCING, whatever the loss, the latch, the
seed or the limits say: getting out must never be blocked by the guard
against getting in. In HALTED nothing passes here: the Panic actor owns
every close on its own lane then. An order that would increase exposure
is an entry and passes every check, also when it comes from a FLAT signal.

Risk hears Panic's trading state itself (it starts HALTED, like the
Executor) and judges by the stricter of its own view and the one in the
request, so a state change in flight never opens the gate early.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Callable

import pykka

from actors.base import ActorContext, NodeActor, Role
from actors.timers import Repeater, tell_later
from infra.config import RiskConfig
from infra.store import HistoryStore
from infra.store.risk_state import RiskDay, RiskStateStore
from messages.commands import Panic
from messages.control import RiskStatus, TradingState, TradingStateChanged
from messages.queries import GetSnapshot
from messages.trading import OrderIntent, PortfolioSnapshot, RiskCheck, RiskDecision
from messages.types import UTC, Message, Side, now_utc, utc_to_ms

_ZERO = Decimal(0)
_HUNDRED = Decimal(100)


_FIGURE_STEP = Decimal("0.000001")


def _s(value: Decimal | None) -> str:
    """A figure for an event: plain notation, at most six decimals.

    Every decision formats about ten of these on Risk's thread, inside the Executor's ask:
    the digits after the point are counted in the text rather than read from `as_tuple()`
    (which builds a tuple of every digit), about half the cost per figure."""
    if value is None:
        return "unknown"
    text = format(value.normalize(), "f")
    dot = text.find(".")
    if dot >= 0 and len(text) - dot > 7:  # more than six decimals
        text = format(value.quantize(_FIGURE_STEP).normalize(), "f")
    return text


class NotSeeded(Exception):
    """Today's PnL is unknown: the seed failed or has not run. Every entry is blocked."""


class DailyLossTracker:
    """Today's anchor, peak equity and latch. The anchor is never readable directly (DATA-016)."""

    def __init__(self) -> None:
        self.__day: RiskDay | None = None
        self._unseeded_reason = "not seeded yet"

    # --- seeding ------------------------------------------------------------

    def seed(self, row: RiskDay) -> None:
        self.__day = row

    def unseed(self, reason: str) -> None:
        """Forget the anchor (a failed seed, a rollover without a wallet): entries block from now."""
        self.__day = None
        self._unseeded_reason = reason

    @property
    def seeded(self) -> bool:
        return self.__day is not None

    @property
    def unseeded_reason(self) -> str:
        return "" if self.seeded else self._unseeded_reason

    def _row(self) -> RiskDay:
        if self.__day is None:
            raise NotSeeded(self._unseeded_reason)
        return self.__day

    @property
    def day(self) -> date | None:
        return None if self.__day is None else self.__day.day

    def row(self) -> RiskDay:
        """The day's row for persisting; NotSeeded without one."""
        return self._row()

    # --- the guarded figures --------------------------------------------------

    def daily_pnl(self, equity: Decimal) -> Decimal:
        return equity - self._row().anchor_balance

    def peak_equity(self) -> Decimal | None:
        return self._row().peak_equity

    def drawdown_pct(self, equity: Decimal) -> Decimal:
        peak = self._row().peak_equity
        if peak is None or peak <= 0:
            return _ZERO
        return max(_ZERO, (peak - equity) / peak * _HUNDRED)

    def observe_equity(self, equity: Decimal) -> bool:
        """Raise the peak; True when it moved."""
        row = self._row()
        if row.peak_equity is None or equity > row.peak_equity:
            self.__day = row.with_peak(equity)
            return True
        return False

    # --- the latch --------------------------------------------------------------

    @property
    def latched(self) -> bool:
        return self.__day is not None and self.__day.latched

    @property
    def latch_reason(self) -> str | None:
        return None if self.__day is None else self.__day.latch_reason

    def trip(self, reason: str, at: datetime) -> RiskDay:
        self.__day = self._row().with_latch(reason, at)
        return self.__day


@dataclass(frozen=True)
class Trip:
    """evaluate(): the daily loss limit was reached; persist `row`, then tell Panic."""

    row: RiskDay
    reason: str


@dataclass(frozen=True)
class Rollover:
    """evaluate(): a new UTC day began; persist `row` (None: no wallet to anchor it, now unseeded)."""

    row: RiskDay | None
    was_latched: bool


_STRICTNESS = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


def utc_midnight(t: datetime) -> datetime:
    t = t.astimezone(UTC)
    return datetime(t.year, t.month, t.day, tzinfo=UTC)


def increases_exposure(current: Decimal, order_signed: Decimal) -> bool:
    """Would the position be bigger, or on the other side, after the order? (DATA-024's rule)"""
    after = current + order_signed
    if abs(after) > abs(current):
        return True
    return current != 0 and after != 0 and (after > 0) != (current > 0)


class RiskEngine:
    """The pre-trade checks and the daily-loss bookkeeping; no threads, no I/O."""

    def __init__(self, limits: RiskConfig, clock: Callable[[], datetime] = now_utc):
        self.limits = limits
        self.tracker = DailyLossTracker()
        self.trading_state = TradingState.HALTED
        self._clock = clock

    # --- the checks --------------------------------------------------------------

    def check(self, req: RiskCheck) -> RiskDecision:
        intent, pf = req.intent, req.portfolio
        # Both hear Panic's trading state; while the two copies disagree the stricter one counts.
        state = max(req.trading_state, self.trading_state, key=_STRICTNESS.__getitem__)
        pos = pf.position(intent.symbol)
        current = pos.signed_size if pos is not None else _ZERO
        grows = increases_exposure(current, intent.signed_qty)
        base = {
            "symbol": intent.symbol,
            "side": intent.side.value,
            "qty": _s(intent.qty),
            "position": _s(current),
            "trading_state": state.value,
            "increases_exposure": "true" if grows else "false",
        }
        if state is TradingState.HALTED:
            return _block("trading_state", "trading is HALTED: nothing is sent (Panic owns closes)", base)
        if not grows:
            # DATA-024: getting out is never blocked by the limits on getting in.
            return RiskDecision(True, None, "close: does not increase exposure", base)
        if req.is_close or intent.reduce_only:
            return _block("close_increases_exposure", "a close/reduce-only order that would increase exposure", base)
        if state is not TradingState.ACTIVE:
            return _block("trading_state", f"trading is {state.value}: only orders that reduce exposure", base)
        return self._check_entry(req, base, current)

    def _check_entry(self, req: RiskCheck, base: dict[str, str], current: Decimal) -> RiskDecision:
        intent, pf, lim = req.intent, req.portfolio, self.limits
        if pf.equity is None:
            return _block("wallet", "no wallet seen: equity unknown", base)
        equity = pf.equity
        try:
            pnl = self.tracker.daily_pnl(equity)
            drawdown = self.tracker.drawdown_pct(equity)
        except NotSeeded as exc:
            return _block("seed", f"today's PnL is not seeded ({exc}): entries are blocked", base)
        # The day rolls in `evaluate`, on a timer that needs a StateStore snapshot; until it has run,
        # yesterday's anchor would let today's loss hide behind yesterday's gain.
        today = self._clock().astimezone(UTC).date()
        if self.tracker.day != today:
            return _block("seed", f"the PnL anchor is for {self.tracker.day}, not today ({today}): entries wait "
                                  "for the UTC day rollover", base)
        figs = {**base, "equity": _s(equity), "daily_pnl": _s(pnl)}
        if self.tracker.latched:
            return _block("daily_loss_latch", f"daily loss latch tripped: {self.tracker.latch_reason}", figs)
        if pnl <= -lim.max_daily_loss_usd:
            return _block("daily_loss", "daily loss limit reached", {**figs, "limit": _s(-lim.max_daily_loss_usd)})
        if drawdown >= lim.max_drawdown_pct:
            return _block("drawdown", "equity too far below today's peak",
                          {**figs, "drawdown_pct": _s(drawdown), "peak_equity": _s(self.tracker.peak_equity()),
                           "limit_pct": _s(lim.max_drawdown_pct)})
        balance = pf.available_balance if pf.available_balance is not None else equity
        if balance < lim.min_balance_usd:
            return _block("min_balance", "balance below the minimum", {**figs, "balance": _s(balance),
                                                                       "limit": _s(lim.min_balance_usd)})
        # Entries still awaiting their fill count as if filled: the portfolio shows a position only
        # once the stream has it, and a burst on other symbols must not pass the limits together.
        pending = [p for p in req.in_flight if p.symbol != intent.symbol]
        open_symbols = {p.symbol for p in pf.positions} | {p.symbol for p in pending}
        if intent.symbol not in open_symbols and len(open_symbols) >= lim.max_open_positions:
            return _block("max_open_positions", "too many open positions",
                          {**figs, "open_positions": str(len(open_symbols)), "limit": str(lim.max_open_positions)})
        price = intent.price
        if price is None:
            return _block("price", "no price to value the order at", figs)
        after = current + intent.signed_qty
        position_after = abs(after) * price
        if position_after > lim.max_position_usd:
            return _block("position_exposure", "position would exceed max_position_usd",
                          {**figs, "position_usd": _s(position_after), "limit": _s(lim.max_position_usd)})
        gross_after = (sum((p.notional for p in pf.positions if p.symbol != intent.symbol), _ZERO)
                       + sum((p.notional for p in pending), _ZERO) + position_after)
        if gross_after > lim.max_total_exposure_usd:
            return _block("gross_exposure", "gross exposure would exceed max_total_exposure_usd",
                          {**figs, "gross_usd": _s(gross_after), "limit": _s(lim.max_total_exposure_usd)})
        if equity <= 0:
            return _block("leverage", "equity is not positive", figs)
        leverage = gross_after / equity
        if leverage > lim.max_leverage:
            return _block("leverage", "account leverage would exceed max_leverage",
                          {**figs, "leverage": _s(leverage), "limit": _s(lim.max_leverage)})
        if req.funding_rate is None:
            return _block("funding", "funding rate unknown: the holding cost cannot be bounded", figs)
        # Longs pay a positive rate, shorts a negative one; receiving funding costs nothing.
        paid_rate = req.funding_rate if intent.side is Side.BUY else -req.funding_rate
        settlements = lim.funding_horizon_hours / lim.funding_interval_hours
        funding_cost = max(_ZERO, intent.qty * price * paid_rate * settlements)
        if funding_cost > lim.max_funding_cost_usd:
            return _block("funding", "funding over the holding horizon would exceed max_funding_cost_usd",
                          {**figs, "funding_rate": _s(req.funding_rate), "funding_cost_usd": _s(funding_cost),
                           "limit": _s(lim.max_funding_cost_usd)})
        return RiskDecision(True, None, "entry within every limit", {
            **figs,
            "position_usd": _s(position_after),
            "gross_usd": _s(gross_after),
            "leverage": _s(leverage),
            "drawdown_pct": _s(drawdown),
            "funding_cost_usd": _s(funding_cost),
        })

    # --- the day's bookkeeping -------------------------------------------------------

    def evaluate(self, portfolio: PortfolioSnapshot) -> list[Trip | Rollover]:
        """Between signals: roll the day, raise the peak, trip the latch at the loss limit."""
        now = self._clock()
        out: list[Trip | Rollover] = []
        day = self.tracker.day
        if day is not None and now.astimezone(UTC).date() != day:
            was_latched = self.tracker.latched
            if portfolio.wallet_balance is None:
                self.tracker.unseed("a new UTC day began and no wallet balance was there to anchor it")
                out.append(Rollover(None, was_latched))
                return out
            row = RiskDay(day=now.astimezone(UTC).date(), anchor_balance=portfolio.wallet_balance,
                          peak_equity=portfolio.equity, latched=False, latch_reason=None, latched_at=None,
                          seed_source="rollover")
            self.tracker.seed(row)
            out.append(Rollover(row, was_latched))
        if not self.tracker.seeded or portfolio.equity is None:
            return out
        self.tracker.observe_equity(portfolio.equity)
        trip = self.trip_if_limit(portfolio.equity)
        if trip is not None:
            out.append(trip)
        return out

    def trip_if_limit(self, equity: Decimal) -> Trip | None:
        if self.tracker.latched:
            return None
        try:
            pnl = self.tracker.daily_pnl(equity)
        except NotSeeded:
            return None
        limit = self.limits.max_daily_loss_usd
        if pnl > -limit:
            return None
        reason = f"daily loss {_s(pnl)} USD reached the limit of {_s(limit)} USD"
        return Trip(self.tracker.trip(reason, self._clock()), reason)


def _block(check: str, reason: str, figures: dict[str, str]) -> RiskDecision:
    return RiskDecision(False, check, reason, figures)


# --- the actor ------------------------------------------------------------------------


class _Seed(Message):
    attempt: int = 1


@dataclass(frozen=True)
class _SeedDone:
    """The seed thread's outcome, told back to the actor's own mailbox."""

    attempt: int
    row: RiskDay | None
    note: str
    error: str | None


class _Evaluate(Message):
    pass


class Risk(NodeActor):
    """Binds `RiskEngine` to a mailbox; owns seeding, persistence and the latch's announcement."""

    role = Role.RISK
    _SEED_RETRY_MAX_S = 30.0
    _PEAK_PERSIST_EVERY_S = 30.0
    _SEED_JOIN_S = 3.0

    def __init__(self, ctx: ActorContext, *, state: RiskStateStore | None = None, gateway: Any = None,
                 clock: Callable[[], datetime] = now_utc):
        super().__init__(ctx)
        cfg = ctx.config.node
        self._engine = RiskEngine(cfg.risk, clock)
        self._clock = clock
        self._gateway = gateway if gateway is not None else ctx.gateway
        self._state = state or RiskStateStore(HistoryStore.for_node(cfg, owner=f"node risk (generation {ctx.generation})"))
        self._ask_timeout_s = float(cfg.risk.ask_timeout_s)
        self._interval_s = float(cfg.risk.evaluate_interval_s)
        self._repeater: Repeater | None = None
        self._evaluating = False
        self._peak_saved_at = 0.0
        self._peak_dirty = False
        self._latch_unsaved: RiskDay | None = None
        self._seeding = False
        self._seed_thread: threading.Thread | None = None
        # The status Panic must know, and the Panic incarnation that got it: a Panic
        # that starts after Risk (start order) or is restarted is told again.
        self._status = RiskStatus(seeded=False, latched=False, reason="not seeded yet")
        self._status_told_to: Any = None

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {
            RiskCheck: self._on_check,
            TradingStateChanged: self._on_trading_state,
            _Seed: self._on_seed,
            _SeedDone: self._on_seed_done,
            _Evaluate: self._on_evaluate,
        }

    @property
    def engine(self) -> RiskEngine:
        return self._engine

    def on_start(self) -> None:
        super().on_start()
        self.actor_ref.tell(_Seed())
        self._repeater = Repeater(self.actor_ref, _Evaluate, self._interval_s,
                                  gate=lambda: not self._evaluating, name="risk-evaluate").start()

    def on_stop(self) -> None:
        if self._repeater is not None:
            self._repeater.stop()
        if self._seed_thread is not None:
            # A seed still inside DuckDB when the interpreter exits would abort the process.
            self._seed_thread.join(timeout=self._SEED_JOIN_S)
        if self._peak_dirty and self._engine.tracker.seeded:
            self._persist(self._engine.tracker.row(), what="peak")
        super().on_stop()

    # --- messages ------------------------------------------------------------------------

    def _on_trading_state(self, msg: TradingStateChanged) -> None:
        self._engine.trading_state = msg.state

    def _on_check(self, req: RiskCheck) -> RiskDecision:
        try:
            decision = self._engine.check(req)
        except Exception as exc:  # a bug must block, never allow, and never kill the actor
            decision = _block("error", f"risk check failed: {exc!r}", {"symbol": req.intent.symbol})
        if decision.allowed:
            self._log.info("risk.allowed", signal_id=req.signal_id, reason=decision.reason, **decision.figures)
        else:
            self._log.warning("risk.blocked", signal_id=req.signal_id, check=decision.check, reason=decision.reason,
                              **decision.figures)
            if decision.check == "daily_loss" and req.portfolio.equity is not None:
                trip = self._engine.trip_if_limit(req.portfolio.equity)
                if trip is not None:
                    self._latch(trip)
        return decision

    def _on_seed(self, msg: _Seed) -> None:
        """The venue and the file are read on a helper thread: a slow venue must not keep this
        mailbox (risk checks, the supervisor's readiness probe) waiting. Checks block until seeded."""
        if self._seeding:
            return
        self._seeding = True
        ref = self.actor_ref

        def seed() -> None:
            try:
                row, note = self._seed_row()
                done = _SeedDone(msg.attempt, row, note, None)
            except Exception as exc:  # venue or file: either way, nothing is known
                done = _SeedDone(msg.attempt, None, "", f"{type(exc).__name__}: {exc}")
            try:
                ref.tell(done)
            except pykka.ActorDeadError:
                pass

        self._seed_thread = threading.Thread(target=seed, name="risk-seed", daemon=True)
        self._seed_thread.start()

    def _on_seed_done(self, msg: _SeedDone) -> None:
        self._seeding = False
        if msg.row is None:
            reason = msg.error or "unknown"
            self._engine.tracker.unseed(f"seed failed: {reason}")
            retry_s = min(self._SEED_RETRY_MAX_S, 2.0 ** (msg.attempt - 1))
            self._log.error("risk.seed_failed", attempt=msg.attempt, error=reason, retry_in_s=retry_s)
            self._announce(RiskStatus(seeded=False, latched=False, reason=f"seed failed: {reason}"))
            tell_later(self.actor_ref, _Seed(attempt=msg.attempt + 1), retry_s)
            return
        row = msg.row
        if self._engine.tracker.seeded and self._engine.tracker.day == row.day:
            return  # a rollover seeded the day meanwhile: it is newer than this read
        self._engine.tracker.seed(row)
        self._log.info(
            "risk.seeded",
            day=row.day.isoformat(),
            source=row.seed_source,
            anchor_balance=_s(row.anchor_balance),
            peak_equity=_s(row.peak_equity),
            latched=row.latched,
            latch_reason=row.latch_reason,
            note=msg.note,
        )
        self._announce(RiskStatus(seeded=True, latched=row.latched, reason=row.latch_reason or "seeded"))

    def _seed_row(self) -> tuple[RiskDay, str]:
        now = self._clock()
        today = now.astimezone(UTC).date()
        stored = self._state.load(today)
        if stored is not None:
            return stored, "today's row from the risk store (a restart keeps its anchor and latch)"
        if self._gateway is None:
            raise RuntimeError("no gateway to read today's closed PnL from")
        midnight = utc_midnight(now)
        wallet = self._gateway.get_wallet()
        closed = self._gateway.get_closed_pnl(start_ms=utc_to_ms(midnight), end_ms=utc_to_ms(now))
        realised = sum((c.closed_pnl for c in closed if c.updated_time >= midnight), _ZERO)
        row = RiskDay(day=today, anchor_balance=wallet.total_wallet_balance - realised, peak_equity=wallet.total_equity,
                      latched=False, latch_reason=None, latched_at=None, seed_source="venue")
        # Durable before it counts: a seed that cannot be stored cannot keep a latch either.
        self._state.save(row, now=now)
        return row, f"wallet balance minus {len(closed)} closed-PnL records since 00:00 UTC ({_s(realised)} USD)"

    def _on_evaluate(self, _msg: _Evaluate) -> None:
        self._evaluating = True
        try:
            self._evaluate()
        except Exception as exc:  # never die on a tick; the next one tries again
            self._log.error("risk.evaluate_failed", error=repr(exc))
        finally:
            self._evaluating = False

    def _evaluate(self) -> None:
        self._retell_status()
        if self._latch_unsaved is not None and self._persist(self._latch_unsaved, what="latch"):
            self._latch_unsaved = None
        store = self._ctx.directory.get(Role.STATE_STORE)
        if store is None:
            return
        try:
            snapshot = store.ask(GetSnapshot(), timeout=self._ask_timeout_s)
        except (pykka.Timeout, pykka.ActorDeadError):
            return
        portfolio = PortfolioSnapshot.from_state(snapshot)
        tracker = self._engine.tracker
        peak_before = tracker.peak_equity() if tracker.seeded else None
        for action in self._engine.evaluate(portfolio):
            if isinstance(action, Rollover):
                self._rollover(action)
            else:
                self._latch(action)
        if tracker.seeded and tracker.peak_equity() != peak_before:
            self._peak_dirty = True
        if self._peak_dirty and time.monotonic() - self._peak_saved_at >= self._PEAK_PERSIST_EVERY_S:
            if self._persist(tracker.row(), what="peak"):
                self._peak_dirty = False
                self._peak_saved_at = time.monotonic()

    def _rollover(self, action: Rollover) -> None:
        if action.row is None:
            self._log.error("risk.rollover_unseeded", reason=self._engine.tracker.unseeded_reason)
            self._announce(RiskStatus(seeded=False, latched=False, reason=self._engine.tracker.unseeded_reason))
            self.actor_ref.tell(_Seed())
            return
        self._persist(action.row, what="rollover")
        self._log.info("risk.day_rollover", day=action.row.day.isoformat(), anchor_balance=_s(action.row.anchor_balance),
                       latch_released=action.was_latched)
        self._announce(RiskStatus(seeded=True, latched=False, reason="new UTC day"))

    def _latch(self, trip: Trip) -> None:
        """Durable first, then announced. A file that will not take it does not stop the halt."""
        durable = self._persist(trip.row, what="latch")
        if not durable:
            self._latch_unsaved = trip.row
        self._log.error("risk.latch_tripped", reason=trip.reason, durable=durable, day=trip.row.day.isoformat())
        self._announce(RiskStatus(seeded=True, latched=True, reason=trip.reason))
        self._tell_panic(Panic(reason=f"daily loss latch: {trip.reason}"))

    def _persist(self, row: RiskDay, *, what: str) -> bool:
        try:
            self._state.save(row, now=self._clock())
        except Exception as exc:
            self._log.error("risk.persist_failed", what=what, day=row.day.isoformat(), error=repr(exc))
            return False
        return True

    def _announce(self, status: RiskStatus) -> None:
        self._status = status
        self._status_told_to = None
        self._retell_status()

    def _retell_status(self) -> None:
        """Tell the current status to the Panic now running, unless that one already has it."""
        panic = self._ctx.directory.get(Role.PANIC)
        if panic is None or panic is self._status_told_to:
            return
        try:
            panic.tell(self._status)
        except pykka.ActorDeadError:
            return
        self._status_told_to = panic

    def _tell_panic(self, msg: Any) -> None:
        if not self._ctx.directory.tell(Role.PANIC, msg):
            self._log.warning("risk.panic_unreachable", message_type=type(msg).__name__)


__all__ = ["DailyLossTracker", "NotSeeded", "Risk", "RiskEngine", "increases_exposure", "utc_midnight"]
