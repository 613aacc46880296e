"""Executor: a signal becomes at most one order, and what happened to it is recorded.

    Signal -> seen before? -> trading state -> venue/mode -> StateStore snapshot
           -> price from the market reader -> size (qty | usd | default, rounded)
           -> Risk (ask) -> price deviation -> create with TP/SL (orderLinkId
           from the signal id) -> fill from the private stream, REST as fallback

Idempotency has two layers. The Executor remembers every signal id it has
handled (the last `_SIGNALS_KEPT`) and answers a repeat with the first
result. Below that, the orderLinkId is derived from the signal id, so even
a repeat it forgot (a restart) or a retry after an unknown outcome re-sends
the same orderLinkId, which the venue refuses as a duplicate (110072) and
the gateway resolves to the existing order: never a second order. While an
entry's outcome is unknown its symbol takes no other entry (the order may
exist): the Executor looks it up by orderLinkId until `fill_timeout_s`, then
confirms its fill as usual, or releases the symbol with an error event.

The fill is confirmed without holding the mailbox: after the create is
accepted, the Executor tells itself `_ConfirmFill` on a timer and reads
StateStore snapshots (executions by orderLinkId) in between other
messages; after `fill_stream_wait_s` it also asks the venue (get_order,
get_executions); after `fill_timeout_s` it gives up with an error event.
Meanwhile a signal for another symbol goes through at once, one for the
same symbol is blocked (`order_in_flight`): it would be judged against a
position that is about to change; a FLAT is never held back by an entry.
A FLAT signal is handed to Panic (`ClosePosition`, close before cancel,
DATA-018) and its answer is waited for on a helper thread, not in the
mailbox; a second FLAT for the symbol meanwhile is `close_in_flight`.

No venue call is made in the mailbox: the create, the lookups of an unknown
outcome and the REST fill checks run on the Executor's venue worker
(actors/venue_calls.py), one at a time, and their outcomes come back as
messages. So a FLAT, another symbol's signal or a status query never waits
behind a create's read timeout and lookup window. A signal's first answer
is therefore PENDING ("sent") or a refusal; `GetExecution` follows it to
its final outcome.

The fill price comes from the venue's order (`avgPrice`) or, when that is
0 or missing, from the executions; never from a quote (DATA-021). Every
result repeats the request's flags, `reduce_only` included (DATA-022).
Prices come from the market reader (stream first, REST only as its own
fallback, DATA-023): the Executor itself makes no REST price call.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Callable, Iterable

import pykka

from actors.base import ActorContext, NodeActor, Role
from actors.timers import tell_later
from actors.venue_calls import VenueAnswer, VenueCalls
from infra.bybit import (
    ExchangeError,
    IpBanned,
    OrderAck,
    OrderRefused,
    OrderRequest,
    OrderType,
    OutcomeUnknown,
    Rejected,
    Resolution,
    TransientError,
)
from infra.bybit import order_link_id as derive_link_id
from infra.bybit.instruments import Instrument, decimal_str
from infra.config import VENUE_MODE
from infra.logging import hold_writer, release_writer
from infra.market_reader import MarketReader, Quote, StaleMarketData
from messages.account import Execution, Order, OrderStatus
from messages.commands import ClosePosition, CloseOutcome, CloseResult, Direction, Signal
from messages.control import TradingState, TradingStateChanged
from messages.queries import GetSnapshot, GetTradingState, StateSnapshot
from messages.trading import (
    ExecutionOutcome,
    ExecutionResult,
    GetExecution,
    GetTradingView,
    OrderIntent,
    PortfolioSnapshot,
    PositionView,
    RiskCheck,
    RiskDecision,
    TradingView,
)
from messages.types import Message, Side, now_utc, utc_to_ms

_ZERO = Decimal(0)
_HUNDRED = Decimal(100)
_SIGNALS_KEPT = 10_000
# A signal is made on this host (the strategy, or `main.py signal`): a date ahead of our clock by
# more than scheduling jitter is a bug upstream, not skew.
_FUTURE_TOLERANCE_S = 2.0
_ENDED = (OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.PARTIALLY_FILLED_CANCELED,
          OrderStatus.DEACTIVATED)


def _s(value: Decimal | None) -> str | None:
    return None if value is None else decimal_str(value)


# --- the pure parts -----------------------------------------------------------


def _release(holders: dict[str, str], symbol: str, signal_id: str) -> None:
    """Free `symbol` if `signal_id` still holds it: a later signal may hold it by now."""
    if holders.get(symbol) == signal_id:
        del holders[symbol]


def _foreign_order(order: Order | None, request: OrderRequest) -> Order | None:
    """The venue's order found by orderLinkId, when it is not the one `request` asked for (else None)."""
    if order is None:
        return None
    if (order.symbol != request.symbol or order.side is not request.side or order.qty != request.qty
            or bool(order.reduce_only) != request.reduce_only):
        return order
    return None


class Blocked(Exception):
    """The signal stops here; nothing was sent."""

    def __init__(self, check: str, reason: str, **figures: Any):
        self.check, self.reason, self.figures = check, reason, figures
        super().__init__(f"{check}: {reason}")


def reference_price(quote: Quote) -> Decimal:
    price = quote.last_price or quote.mark_price
    if price is None:
        raise Blocked("price", f"{quote.symbol}: the reader has neither a last nor a mark price")
    return price


def order_qty(signal: Signal, price: Decimal, inst: Instrument, default_usd: Decimal) -> Decimal:
    """Contracts for the signal: its qty, or its USD (else the default) at `price`, rounded down to the step."""
    if signal.qty is not None:
        raw = signal.qty
    else:
        raw = (signal.usd or default_usd) / price
    try:
        qty = inst.checked_qty(raw, market=True, reduce_only=False)
        inst.check_notional(qty, price)
    except OrderRefused as exc:
        raise Blocked("size", exc.detail or exc.reason, requested=_s(raw)) from None
    return qty


def protective_levels(signal: Signal, side: Side, price: Decimal, tp_pct: Decimal,
                      sl_pct: Decimal) -> tuple[Decimal | None, Decimal | None]:
    """The signal's TP/SL, or the configured distances from `price` for what it left out (0: none).

    Every entry carries its stop into the venue in the create request itself,
    so no position exists, not even for a moment, without it.
    """
    sign = Decimal(1) if side is Side.BUY else Decimal(-1)
    tp, sl = signal.take_profit, signal.stop_loss
    if tp is None and tp_pct > 0:
        tp = price * (1 + sign * tp_pct / _HUNDRED)
    if sl is None and sl_pct > 0:
        sl = price * (1 - sign * sl_pct / _HUNDRED)
    return tp, sl


def price_deviation_pct(quote: Quote, signal_price: Decimal | None) -> tuple[Decimal, str]:
    """The largest of: market vs the signal's price, last vs mark. (0, "") when nothing to compare."""
    worst, against = _ZERO, ""
    last, mark = quote.last_price, quote.mark_price
    market = last or mark
    if signal_price is not None and market is not None:
        dev = abs(market - signal_price) / signal_price * _HUNDRED
        worst, against = dev, "signal_price"
    if last is not None and mark is not None:
        dev = abs(last - mark) / mark * _HUNDRED
        if dev > worst:
            worst, against = dev, "mark_price"
    return worst, against


@dataclass(frozen=True)
class Fill:
    qty: Decimal
    avg_price: Decimal
    source: str  # "order" | "executions"


def vwap(executions: Iterable[Execution]) -> tuple[Decimal, Decimal | None]:
    qty = value = _ZERO
    for e in executions:
        qty += e.exec_qty
        value += e.exec_qty * e.exec_price
    return qty, (value / qty if qty > 0 else None)


def fill_from(order: Order | None, executions: Iterable[Execution]) -> Fill | None:
    """The fill as the venue reports it: avgPrice when it has one, else the executions (DATA-021).

    None while neither says the order is filled at a known price. A quote is never used.
    """
    exec_qty, exec_avg = vwap(executions)
    if order is not None and order.order_status is OrderStatus.FILLED:
        qty = order.cum_exec_qty or order.qty
        if order.avg_price is not None:
            return Fill(qty, order.avg_price, "order")
        if exec_avg is not None and exec_qty >= qty:
            return Fill(exec_qty, exec_avg, "executions")
        return None
    return None


_EXEC_LOOKBACK = timedelta(minutes=1)


def _executions_of(executions: tuple[Execution, ...], link: str, order_id: str, *, since: datetime) -> list[Execution]:
    """This order's trade executions; newest first, stopping at the first one older than `since`
    (the StateStore keeps thousands: a full scan per check would cost a millisecond)."""
    out = []
    for e in reversed(executions):
        if e.exec_time < since:
            break
        if e.is_trade and (e.order_link_id == link or e.order_id == order_id):
            out.append(e)
    return out


class SignalLedger:
    """The signal ids already handled, newest last, with their latest result (bounded)."""

    def __init__(self, kept: int = _SIGNALS_KEPT):
        self._kept = kept
        self._results: OrderedDict[str, ExecutionResult] = OrderedDict()

    def get(self, signal_id: str) -> ExecutionResult | None:
        return self._results.get(signal_id)

    def record(self, result: ExecutionResult) -> None:
        self._results[result.signal_id] = result
        self._results.move_to_end(result.signal_id)
        while len(self._results) > self._kept:
            self._results.popitem(last=False)


# --- the actor --------------------------------------------------------------------


class _ConfirmFill(Message):
    order_link_id: str
    attempt: int = 1


class _SyncState(Message):
    attempt: int = 1


class _ResolveUnknown(Message):
    order_link_id: str
    attempt: int = 1


@dataclass(frozen=True)
class _CloseDone:
    signal_id: str
    symbol: str
    result: CloseResult | None
    error: str | None
    # No answer yet after close_timeout_s (`unanswered`), or none at all within the late bound (`gave_up`):
    # either way the close may still happen, so it is not a failure.
    unanswered: bool = False
    gave_up: bool = False
    waited_s: float = 0.0


@dataclass
class _Unknown:
    """An entry sent whose fate is unknown: its symbol stays busy while the venue is asked for it."""

    signal: Signal
    request: OrderRequest
    result: ExecutionResult
    sent_at: datetime
    since_mono: float


@dataclass(frozen=True)
class _Sending:
    """An entry handed to the venue worker, its create not answered yet: its symbol is busy."""

    signal: Signal
    request: OrderRequest
    base: ExecutionResult
    price: Decimal
    quote: Quote
    pretrade_us: float


@dataclass
class _Pending:
    signal: Signal
    request: OrderRequest
    ack: OrderAck
    placed_at: datetime
    placed_mono: float
    result: ExecutionResult


class Executor(NodeActor):
    role = Role.EXECUTOR

    def __init__(self, ctx: ActorContext, *, reader: MarketReader | None = None, gateway: Any = None,
                 clock: Callable[[], datetime] = now_utc):
        super().__init__(ctx)
        node = ctx.config.node
        self._node = node
        self._risk_cfg = node.risk
        self._gateway = gateway if gateway is not None else ctx.gateway
        self._reader = reader if reader is not None else getattr(ctx, "market_reader", None)
        self._clock = clock
        self._state = TradingState.HALTED
        self._ledger = SignalLedger()
        self._sending: dict[str, _Sending] = {}  # orderLinkId -> entry whose create is on the wire
        self._pending: dict[str, _Pending] = {}  # orderLinkId -> order awaiting its fill
        self._asking: set[str] = set()  # orderLinkIds whose fill question is with the venue worker
        self._unknown: dict[str, _Unknown] = {}  # orderLinkId -> entry sent with an unknown outcome
        self._busy_symbols: dict[str, str] = {}  # symbol -> signal id of the entry awaiting its fill
        self._closing_symbols: dict[str, str] = {}  # symbol -> signal id of the close Panic is doing
        self._ask_s = float(self._risk_cfg.ask_timeout_s)
        self._stream_wait_s = float(self._risk_cfg.fill_stream_wait_s)
        self._fill_timeout_s = float(self._risk_cfg.fill_timeout_s)
        self._timers: set[threading.Timer] = set()
        self._warm_thread: threading.Thread | None = None
        self._venue: VenueCalls | None = None
        self._answers: dict[str, Callable[[Any, BaseException | None], None]] = {}  # token -> continuation
        self._tokens = 0
        # One immutable query per configured symbol, asked again for every signal: building the
        # pydantic message anew cost about 1 us of the signal's path each time.
        self._view_queries = {symbol: GetTradingView(symbol=symbol) for symbol in node.symbols}
        # A restarted Executor (generation > 0) knows nothing of its predecessor's entries: one may
        # still be on the wire (read timeout + lookup window), or accepted and not yet visible in
        # the positions Risk judges by (fill timeout). Entries wait that long; closes never do.
        self._restart_hold_s = 0.0
        if ctx.generation > 0:
            self._restart_hold_s = float(self._risk_cfg.fill_timeout_s + node.exchange.rest_timeout_s
                                         + node.exchange.order_lookup_window_s)
        self._entries_from = time.monotonic() + self._restart_hold_s

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {
            Signal: self._on_signal,
            TradingStateChanged: self._on_trading_state,
            _SyncState: self._on_sync_state,
            _ConfirmFill: self._on_confirm_fill,
            _ResolveUnknown: self._on_resolve_unknown,
            _CloseDone: self._on_close_done,
            VenueAnswer: self._on_venue_answer,
            GetExecution: lambda m: self._ledger.get(m.signal_id),
        }

    def on_start(self) -> None:
        super().on_start()
        self._venue = VenueCalls(self.actor_ref, name="executor-venue")
        if self._restart_hold_s:
            self._log.warning("executor.restart_hold", hold_s=round(self._restart_hold_s, 1),
                              reason="restarted: an entry of the Executor before may still be in flight; "
                                     "entries wait, closes go through")
        # Panic tells the state only when it changes: a restarted Executor asks for the current one,
        # here and not by a message to itself: a signal told right after start() would be ahead of
        # that message in the mailbox and be judged HALTED.
        self._on_sync_state(_SyncState())
        if self._reader is None:
            self._log.error("executor.no_market_reader",
                            reason="no MarketReader in the actor context: every entry will be blocked")
        if self._gateway is None:
            self._log.error("executor.no_gateway", reason="no gateway in the actor context: every order will be blocked")
        else:
            # On a helper thread: a slow venue must not hold the mailbox past the readiness probe.
            self._warm_thread = threading.Thread(target=self._warm, name="executor-warm", daemon=True)
            self._warm_thread.start()

    def on_stop(self) -> None:
        for timer in list(self._timers):
            timer.cancel()
        if self._warm_thread is not None:
            self._warm_thread.join(timeout=1.0)  # no request of ours in flight while the process exits
        if self._venue is not None:
            self._venue.stop(wait_s=1.0)
        for sending in self._sending.values():
            self._log.warning("order.unknown_released", signal_id=sending.signal.signal_id,
                              order_link_id=sending.request.order_link_id, symbol=sending.request.symbol,
                              reason="executor stopping while the create was on the wire")
        for u in self._unknown.values():
            self._log.warning("order.unknown_released", signal_id=u.signal.signal_id,
                              order_link_id=u.request.order_link_id, symbol=u.request.symbol, reason="executor stopping")
        for p in self._pending.values():
            self._log.warning("order.fill_unconfirmed", signal_id=p.signal.signal_id, order_link_id=p.request.order_link_id,
                              order_id=p.ack.order_id, symbol=p.request.symbol, reason="executor stopping")
        super().on_stop()

    # --- messages ---------------------------------------------------------------------

    def _on_trading_state(self, msg: TradingStateChanged) -> None:
        self._state = msg.state

    def _on_sync_state(self, msg: _SyncState) -> None:
        """Ask Panic (downward, with a timeout) for the state now; until it answers, HALTED holds."""
        ref = self._ctx.directory.get(Role.PANIC)
        view = None
        if ref is not None:
            try:
                # Short: the Supervisor's start-up Ping waits behind this in the mailbox.
                view = ref.ask(GetTradingState(), timeout=min(self._ask_s, 0.5))
            except (pykka.Timeout, pykka.ActorDeadError):
                view = None
        if isinstance(view, TradingStateChanged):
            # The answer is the state at this moment; a change told after it is handled after it.
            self._state = view.state
            self._log.info("executor.trading_state_synced", state=view.state.value, reason=view.reason,
                           attempt=msg.attempt)
            return
        self._schedule(_SyncState(attempt=msg.attempt + 1), min(5.0, 0.1 * 2 ** min(msg.attempt, 6)))

    def _warm(self) -> None:
        """Instrument rules off the hot path, so the first signal does not wait for them (the cache is thread-safe)."""
        for symbol in self._node.symbols:
            try:
                self._gateway.instrument(symbol)
            except Exception as exc:
                self._log.warning("executor.instrument_unavailable", symbol=symbol, error=repr(exc))

    def _on_signal(self, signal: Signal) -> ExecutionResult:
        """Never raises: a raising handler on a tell would kill the actor and drop its mailbox.

        The log writer is held from here until the order is handed to the gateway: rendering
        lines meanwhile would compete with this path (and Risk's and the StateStore's parts of
        it) for the interpreter lock. The lines are written right after."""
        hold_writer()
        try:
            return self._signal(signal)
        finally:
            release_writer()

    def _signal(self, signal: Signal) -> ExecutionResult:
        received_mono = time.perf_counter()
        seen = self._ledger.get(signal.signal_id)
        if seen is not None and seen.outcome is not ExecutionOutcome.UNKNOWN and not seen.retryable:
            self._log.info("executor.duplicate_signal", signal_id=signal.signal_id, outcome=seen.outcome.value,
                           order_link_id=seen.order_link_id)
            return seen
        self._log.info("signal.received", signal_id=signal.signal_id, symbol=signal.symbol,
                       direction=signal.direction.value, qty=_s(signal.qty), usd=_s(signal.usd),
                       retry_of_unknown=seen is not None)
        try:
            result = self._handle(signal, received_mono)
        except Blocked as b:
            result = self._blocked(signal, b)
        except Exception as exc:  # a bug: the signal is refused, the actor lives
            self._log.error("executor.signal_failed", signal_id=signal.signal_id, error=repr(exc))
            result = self._blocked(signal, Blocked("error", repr(exc)))
        if seen is not None and seen.outcome is ExecutionOutcome.UNKNOWN and result.outcome is ExecutionOutcome.BLOCKED:
            # The first send's order may exist: a re-send stopped by a check changes nothing about
            # that, and the signal must stay re-sendable (a BLOCKED entry would answer as a duplicate).
            result = replace(seen, reason=f"re-send blocked ({result.check}: {result.reason}); the first send's "
                                          "outcome is still unknown", finished_at=self._clock())
        self._ledger.record(result)
        return result

    def _blocked(self, signal: Signal, b: Blocked) -> ExecutionResult:
        if b.check != "risk":  # Risk logs its own decision (risk.blocked)
            self._log.warning("executor.blocked", signal_id=signal.signal_id, symbol=signal.symbol, check=b.check,
                              reason=b.reason, **{k: v for k, v in b.figures.items() if v is not None})
        return ExecutionResult(
            signal_id=signal.signal_id, symbol=signal.symbol, direction=signal.direction.value,
            outcome=ExecutionOutcome.BLOCKED, reason=b.reason, check=b.figures.get("risk_check") or b.check,
            reduce_only=signal.direction is Direction.FLAT, take_profit=signal.take_profit, stop_loss=signal.stop_loss,
            finished_at=self._clock(),
        )

    def _handle(self, signal: Signal, received_mono: float) -> ExecutionResult:
        closing = signal.direction is Direction.FLAT
        if self._state is TradingState.HALTED:
            raise Blocked("trading_state", "trading is HALTED")
        if self._state is TradingState.REDUCING and not closing:
            raise Blocked("trading_state", "trading is REDUCING: only closes")
        self._check_mode()
        # An entry waits for whatever is in flight on its symbol (it would be judged against a
        # position about to change); a close only for another close: getting out is never queued
        # behind an entry's confirmation.
        closing_now = self._closing_symbols.get(signal.symbol)
        if closing_now is not None and closing_now != signal.signal_id:
            raise Blocked("close_in_flight", f"signal {closing_now} is closing {signal.symbol}")
        busy = self._busy_symbols.get(signal.symbol)
        if not closing and busy is not None and busy != signal.signal_id:
            raise Blocked("order_in_flight", f"signal {busy} on {signal.symbol} is not finished yet")
        if not closing:
            self._check_age(signal)
            self._check_restart_hold()
        view = self._trading_view(signal.symbol)
        if closing:
            return self._close(signal, view.portfolio)
        return self._enter(signal, view, received_mono)

    def _check_age(self, signal: Signal) -> None:
        """An entry decided too long ago (or dated ahead of our clock) is refused; closes never are."""
        age_s = (self._clock() - signal.created_at).total_seconds()
        limit_s = float(self._risk_cfg.max_signal_age_s)
        if age_s > limit_s:
            raise Blocked("signal_age", f"the signal is {age_s:.1f} s old, over the {limit_s:g} s limit: it was "
                                        "decided on a market that has moved on", age_s=round(age_s, 3), limit_s=limit_s)
        if age_s < -_FUTURE_TOLERANCE_S:
            raise Blocked("signal_age", f"the signal is dated {-age_s:.1f} s ahead of this node's clock",
                          age_s=round(age_s, 3), limit_s=limit_s)

    def _check_restart_hold(self) -> None:
        left = self._entries_from - time.monotonic()
        if left > 0:
            raise Blocked("restart_settling", f"the Executor restarted; an entry of the one before it may still be "
                                              f"in flight: entries resume in {left:.1f} s", resume_in_s=round(left, 1))

    def _check_mode(self) -> None:
        node = self._node
        if VENUE_MODE[node.venue] is not node.trading_mode:
            raise Blocked("mode", f"trading_mode {node.trading_mode.value} does not match venue {node.venue.value}")
        if self._gateway is None:
            raise Blocked("mode", "no gateway")
        problems = self._gateway.trading_problems()
        if problems:
            raise Blocked("mode", "; ".join(problems))

    def _snapshot(self) -> StateSnapshot:
        return self._ask(Role.STATE_STORE, GetSnapshot(), check="state", who="StateStore")

    def _trading_view(self, symbol: str) -> TradingView:
        query = self._view_queries.get(symbol) or GetTradingView(symbol=symbol)
        return self._ask(Role.STATE_STORE, query, check="state", who="StateStore")

    def _ask_risk(self, check: RiskCheck) -> RiskDecision:
        return self._ask(Role.RISK, check, check="risk_unavailable", who="Risk")

    def _ask(self, role: Role, query: Message, *, check: str, who: str) -> Any:
        """Ask a peer below; no peer, a timeout or a dead peer blocks the signal (fail closed)."""
        ref = self._ctx.directory.get(role)
        if ref is None:
            raise Blocked(check, f"no {who} running")
        try:
            return ref.ask(query, timeout=self._ask_s)
        except (pykka.Timeout, pykka.ActorDeadError) as exc:
            raise Blocked(check, f"{who} did not answer: {type(exc).__name__}") from None

    # --- entries -----------------------------------------------------------------------

    def _enter(self, signal: Signal, view: TradingView, received_mono: float) -> ExecutionResult:
        if self._reader is None:
            raise Blocked("price", "no market reader configured")
        portfolio = view.portfolio
        try:
            quote = self._reader.quote(signal.symbol, max_age_s=float(self._risk_cfg.max_quote_age_s),
                                       stream=view.ticker)
        except StaleMarketData as exc:
            raise Blocked("price", f"no fresh price: {exc}") from None
        price = reference_price(quote)
        inst = self._gateway.instrument(signal.symbol)
        qty = order_qty(signal, price, inst, self._risk_cfg.default_order_usd)
        side = Side.BUY if signal.direction is Direction.LONG else Side.SELL
        decision = self._ask_risk(RiskCheck(
            signal_id=signal.signal_id,
            intent=OrderIntent(symbol=signal.symbol, side=side, qty=qty, price=price),
            portfolio=portfolio,
            trading_state=self._state,
            funding_rate=quote.funding_rate,
            in_flight=self._entries_in_flight(),
        ))
        if not decision.allowed:
            raise Blocked("risk", decision.reason, risk_check=decision.check)
        deviation, against = price_deviation_pct(quote, signal.price)
        if deviation > self._risk_cfg.max_price_deviation_pct:
            raise Blocked("price_deviation", f"price is {_s(deviation.quantize(Decimal('0.0001')))} % off the {against}",
                          limit_pct=_s(self._risk_cfg.max_price_deviation_pct), price=_s(price),
                          signal_price=_s(signal.price), mark_price=_s(quote.mark_price))
        take_profit, stop_loss = protective_levels(signal, side, price, self._risk_cfg.default_take_profit_pct,
                                                   self._risk_cfg.default_stop_loss_pct)
        # To the tick as the gateway sends them (nearest tick), so the request, the result and
        # order.placed say the levels the venue holds, not 54991.67 for a stop at 54991.7.
        take_profit, stop_loss = (None if level is None else inst.round_trigger_price(level)
                                  for level in (take_profit, stop_loss))
        link = derive_link_id(signal.signal_id, "entry", prefix="x")
        request = OrderRequest(
            symbol=signal.symbol, side=side, order_type=OrderType.MARKET, qty=qty, order_link_id=link,
            reference_price=price, take_profit=take_profit, stop_loss=stop_loss,
        )
        base = ExecutionResult(
            signal_id=signal.signal_id, symbol=signal.symbol, direction=signal.direction.value,
            outcome=ExecutionOutcome.PENDING, order_link_id=link, side=side, order_type=request.order_type.value,
            qty=qty, reduce_only=request.reduce_only, take_profit=request.take_profit, stop_loss=request.stop_loss,
        )
        pretrade_us = (time.perf_counter() - received_mono) * 1e6
        # The create goes out on the venue worker: the mailbox moves on at once, so a FLAT (or any
        # other symbol's signal) never waits behind this create's timeout and lookup window.
        self._sending[link] = _Sending(signal, request, base, price, quote, pretrade_us)
        self._busy_symbols[signal.symbol] = signal.signal_id
        self._call("create", link, lambda: self._gateway.create_order(request),
                   lambda ack, error: self._on_created(link, ack, error))
        release_writer()  # the venue call waits on the network: the writer may use that time
        return base

    def _on_created(self, link: str, ack: OrderAck | None, error: BaseException | None) -> None:
        sending = self._sending.pop(link)
        signal, request, base = sending.signal, sending.request, sending.base
        if error is not None:
            result = self._create_failed(sending, error)
        elif (foreign := _foreign_order(ack.order, request)) is not None:
            result = self._link_taken(signal, request, foreign, base)
        else:
            placed_at = self._clock()
            self._log.info(
                "order.placed", signal_id=signal.signal_id, order_link_id=link, order_id=ack.order_id,
                symbol=signal.symbol, side=request.side.value, qty=_s(ack.qty), reduce_only=ack.reduce_only,
                take_profit=_s(request.take_profit), stop_loss=_s(request.stop_loss), resolution=ack.resolution.value,
                pretrade_us=round(sending.pretrade_us, 1), reference_price=_s(sending.price),
                quote_source=sending.quote.source, quote_age_s=round(sending.quote.age_s, 3),
            )
            result = replace(base, order_id=ack.order_id, qty=ack.qty, placed_at=placed_at)
            self._unknown.pop(link, None)  # a re-send found (or placed) the order: it is confirmed as any other
            self._pending[link] = _Pending(signal, request, ack, placed_at, time.monotonic(), result)
            self.actor_ref.tell(_ConfirmFill(order_link_id=link))
        if result.outcome is not ExecutionOutcome.PENDING and result.outcome is not ExecutionOutcome.UNKNOWN:
            _release(self._busy_symbols, signal.symbol, signal.signal_id)
        self._ledger.record(result)

    def _create_failed(self, sending: _Sending, error: BaseException) -> ExecutionResult:
        signal, request, base = sending.signal, sending.request, sending.base
        link = request.order_link_id
        if isinstance(error, (Rejected, OrderRefused, ExchangeError)) and not isinstance(error, OutcomeUnknown):
            # Not taken, but not refused by the venue either (rate limit, ban, not sent): a re-send may pass.
            retryable = isinstance(error, (TransientError, IpBanned))
            self._log.warning("order.rejected", signal_id=signal.signal_id, order_link_id=link, symbol=signal.symbol,
                              error=f"{type(error).__name__}: {error}", retryable=retryable)
            return replace(base, outcome=ExecutionOutcome.REJECTED, reason=str(error), retryable=retryable,
                           finished_at=self._clock())
        if isinstance(error, OutcomeUnknown):
            self._log.error("order.outcome_unknown", signal_id=signal.signal_id, order_link_id=link,
                            symbol=signal.symbol, error=str(error),
                            action="re-send the same signal: the orderLinkId keeps it to one order")
        else:  # a bug below the gateway's contract: whether the order went out is not known, so fail closed
            self._log.error("executor.signal_failed", signal_id=signal.signal_id, order_link_id=link,
                            error=repr(error), outcome="unknown")
        unknown = replace(base, outcome=ExecutionOutcome.UNKNOWN, reason=str(error) or repr(error),
                          finished_at=self._clock())
        self._hold_unknown(signal, request, unknown)
        return unknown

    # --- the venue worker -------------------------------------------------------------------

    def _call(self, kind: str, link: str, call: Callable[[], Any],
              then: Callable[[Any, BaseException | None], None]) -> None:
        """`call` on the venue worker; `then(value, error)` runs here, in the mailbox, with its outcome."""
        self._tokens += 1
        token = f"{kind}:{link}:{self._tokens}"
        self._answers[token] = then
        assert self._venue is not None  # started in on_start, before any message
        self._venue.submit(token, call)

    def _on_venue_answer(self, msg: VenueAnswer) -> None:
        then = self._answers.pop(msg.token, None)
        if then is None:
            return
        try:
            then(msg.value, msg.error)
        except Exception as exc:  # a bug in a continuation: say so, keep the actor
            self._log.error("executor.venue_answer_failed", call=msg.token, error=repr(exc))

    def _entries_in_flight(self) -> tuple[PositionView, ...]:
        """Entries sent and not yet finished (on the wire, pending a fill, or of unknown outcome), as Risk counts them."""
        sent = [(s.request, s.request.qty) for s in self._sending.values()]
        sent += [(p.request, p.ack.qty) for p in self._pending.values()]
        sent += [(u.request, u.request.qty) for u in self._unknown.values()]
        return tuple(
            PositionView(symbol=req.symbol, signed_size=qty if req.side is Side.BUY else -qty,
                         price=req.reference_price or req.price or _ZERO)
            for req, qty in sent if not req.reduce_only
        )

    def _link_taken(self, signal: Signal, request: OrderRequest, order: Order, base: ExecutionResult) -> ExecutionResult:
        """The orderLinkId belongs to another order (the signal id was used before for another intent):
        nothing was placed for this signal, and that order's fill is not its fill."""
        self._unknown.pop(request.order_link_id, None)
        reason = (f"orderLinkId {request.order_link_id} is held by another order {order.order_id} "
                  f"({order.side.value} {_s(order.qty)} {order.symbol}, {order.order_status.value}); "
                  "nothing was placed: use a new signal id")
        self._log.error("order.link_id_taken", signal_id=signal.signal_id, order_link_id=request.order_link_id,
                        order_id=order.order_id, symbol=request.symbol, wanted_side=request.side.value,
                        wanted_qty=_s(request.qty), held_side=order.side.value, held_qty=_s(order.qty),
                        held_status=order.order_status.value)
        return replace(base, outcome=ExecutionOutcome.REJECTED, reason=reason, order_id=None, retryable=False,
                       finished_at=self._clock())

    # --- unknown outcomes -------------------------------------------------------------------

    def _hold_unknown(self, signal: Signal, request: OrderRequest, result: ExecutionResult) -> None:
        """Fail closed: the order may exist, so its symbol takes no other entry until the venue shows
        it (then its fill is confirmed as usual) or `fill_timeout_s` passes without a trace of it."""
        link = request.order_link_id
        first = link not in self._unknown
        if first:
            self._unknown[link] = _Unknown(signal, request, result, self._clock(), time.monotonic())
        self._busy_symbols[signal.symbol] = signal.signal_id
        if first:
            self._schedule(_ResolveUnknown(order_link_id=link), self._lookup_delay(1))

    def _on_resolve_unknown(self, msg: _ResolveUnknown) -> None:
        u = self._unknown.get(msg.order_link_id)
        if u is None:
            return  # a re-send of the signal resolved it meanwhile
        symbol, link = u.request.symbol, msg.order_link_id
        self._call("lookup", link, lambda: self._gateway.get_order(symbol, order_link_id=link),
                   lambda order, error: self._on_unknown_lookup(msg, order, error))

    def _on_unknown_lookup(self, msg: _ResolveUnknown, order: Order | None, error: BaseException | None) -> None:
        u = self._unknown.get(msg.order_link_id)
        if u is None:
            return  # a re-send of the signal resolved it meanwhile
        symbol = u.request.symbol
        if error is not None:  # keep looking until the deadline
            self._log.warning("order.fill_check_failed", signal_id=u.signal.signal_id,
                              order_link_id=msg.order_link_id, error=repr(error))
            order = None
        if order is not None and _foreign_order(order, u.request) is not None:
            del self._unknown[msg.order_link_id]
            _release(self._busy_symbols, symbol, u.signal.signal_id)
            self._ledger.record(self._link_taken(u.signal, u.request, order, u.result))
            return
        if order is not None:
            del self._unknown[msg.order_link_id]
            self._log.info("order.unknown_resolved", signal_id=u.signal.signal_id, order_link_id=msg.order_link_id,
                           order_id=order.order_id, symbol=symbol, order_status=order.order_status.value)
            ack = OrderAck(symbol=symbol, order_id=order.order_id, order_link_id=msg.order_link_id,
                           resolution=Resolution.LOOKED_UP, order=order, qty=order.qty, reduce_only=order.reduce_only)
            result = replace(u.result, outcome=ExecutionOutcome.PENDING, order_id=order.order_id, qty=order.qty,
                             placed_at=u.sent_at, reason="", finished_at=None)
            self._pending[msg.order_link_id] = _Pending(u.signal, u.request, ack, u.sent_at, time.monotonic(), result)
            self._busy_symbols[symbol] = u.signal.signal_id
            self._ledger.record(result)
            self.actor_ref.tell(_ConfirmFill(order_link_id=msg.order_link_id))
            return
        waited = time.monotonic() - u.since_mono
        if waited >= self._fill_timeout_s:
            del self._unknown[msg.order_link_id]
            _release(self._busy_symbols, symbol, u.signal.signal_id)
            self._log.error("order.unknown_released", signal_id=u.signal.signal_id, order_link_id=msg.order_link_id,
                            symbol=symbol, waited_s=round(waited, 2),
                            reason="the order was not found by its orderLinkId; the symbol takes entries again",
                            action="check the venue for this orderLinkId; reconciliation reports a stray order")
            return
        self._schedule(_ResolveUnknown(order_link_id=msg.order_link_id, attempt=msg.attempt + 1),
                       self._lookup_delay(msg.attempt + 1))

    @staticmethod
    def _lookup_delay(attempt: int) -> float:
        """Between two looks at the venue for an order or its fill: 40 ms, doubling, at most 0.5 s."""
        return min(0.5, 0.02 * 2 ** min(attempt, 5))

    def _schedule(self, msg: Message, delay: float) -> None:
        timer = tell_later(self.actor_ref, msg, delay)
        self._timers.add(timer)
        self._timers = {t for t in self._timers if t.is_alive()}

    # --- fill confirmation ------------------------------------------------------------------

    def _on_confirm_fill(self, msg: _ConfirmFill) -> None:
        p = self._pending.get(msg.order_link_id)
        if p is None:
            return
        try:
            done = self._confirm(p, msg.attempt)
        except Exception as exc:  # keep trying until the deadline; never die here
            self._log.warning("order.fill_check_failed", signal_id=p.signal.signal_id, order_link_id=msg.order_link_id,
                              error=repr(exc))
            done = False
        if done:
            return
        elapsed = time.monotonic() - p.placed_mono
        if elapsed >= self._fill_timeout_s:
            self._log.error("order.fill_unconfirmed", signal_id=p.signal.signal_id, order_link_id=msg.order_link_id,
                            order_id=p.ack.order_id, symbol=p.request.symbol, waited_s=round(elapsed, 2),
                            reason="no fill seen on the stream or over REST; reconciliation will see the order")
            self._finish(p, replace(p.result, outcome=ExecutionOutcome.UNCONFIRMED,
                                    reason=f"no fill confirmed within {self._fill_timeout_s} s"))
            return
        self._schedule(_ConfirmFill(order_link_id=msg.order_link_id, attempt=msg.attempt + 1),
                       self._lookup_delay(msg.attempt))

    def _confirm(self, p: _Pending, attempt: int) -> bool:
        """True: finished; False: not yet. After `fill_stream_wait_s` each check also asks the venue,
        one question at a time per order; its answer (`_on_venue_view`) may finish the order, and the
        stream keeps being watched while it is on its way (behind another order's slow create, say)."""
        link, order_id = p.request.order_link_id, p.ack.order_id
        # The ack of an order found by lookup already carries the venue's view.
        if p.ack.order is not None:
            fill = fill_from(p.ack.order, ())
            if fill is not None:
                return self._filled(p, fill, "lookup")
        try:
            snapshot = self._snapshot()
        except Blocked:
            snapshot = None
        if snapshot is not None:
            execs = _executions_of(snapshot.recent_executions, link, order_id, since=p.placed_at - _EXEC_LOOKBACK)
            qty, avg = vwap(execs)
            if avg is not None and qty >= p.ack.qty:
                return self._filled(p, Fill(qty, avg, "executions"), "stream")
        if time.monotonic() - p.placed_mono < self._stream_wait_s or link in self._asking:
            return False
        self._asking.add(link)
        self._call("fill", link, lambda: self._venue_view(p), lambda view, error: self._on_venue_view(link, view, error))
        return False

    def _venue_view(self, p: _Pending) -> tuple[Order, list[Execution]] | None:
        """On the venue worker: the order by its orderLinkId, with its executions when only they price it."""
        link = p.request.order_link_id
        order = self._gateway.get_order(p.request.symbol, order_link_id=link)
        if order is None:
            return None
        execs: list[Execution] = []
        if order.order_status is OrderStatus.FILLED and order.avg_price is None:
            start = utc_to_ms(p.placed_at - timedelta(minutes=1))
            execs = [e for e in self._gateway.get_executions(symbol=p.request.symbol, start_ms=start)
                     if e.is_trade and (e.order_link_id == link or e.order_id == order.order_id)]
        return order, execs

    def _on_venue_view(self, link: str, view: tuple[Order, list[Execution]] | None,
                       error: BaseException | None) -> None:
        """The checks go on by themselves (`_ConfirmFill`, to `fill_timeout_s`): this only may finish."""
        self._asking.discard(link)
        p = self._pending.get(link)
        if p is None:
            return  # finished meanwhile (the stream saw the fill, or the deadline passed)
        if error is not None:
            self._log.warning("order.fill_check_failed", signal_id=p.signal.signal_id, order_link_id=link,
                              error=repr(error))
        elif view is not None:
            self._judge(p, *view)

    def _judge(self, p: _Pending, order: Order, execs_rest: list[Execution]) -> bool:
        link = p.request.order_link_id
        fill = fill_from(order, execs_rest)
        if fill is not None:
            return self._filled(p, fill, "rest")
        if order.order_status in _ENDED:
            qty = order.cum_exec_qty or _ZERO
            outcome = ExecutionOutcome.PARTIALLY_FILLED if qty > 0 else ExecutionOutcome.REJECTED
            self._log.warning("order.ended_unfilled", signal_id=p.signal.signal_id, order_link_id=link, order_id=order.order_id,
                              symbol=order.symbol, order_status=order.order_status.value, filled_qty=_s(qty),
                              reject_reason=order.reject_reason)
            self._finish(p, replace(p.result, outcome=outcome, filled_qty=qty, avg_price=order.avg_price,
                                    price_source="order" if order.avg_price else None,
                                    reason=f"order ended {order.order_status.value}"))
            return True
        return False

    def _filled(self, p: _Pending, fill: Fill, via: str) -> bool:
        result = replace(p.result, outcome=ExecutionOutcome.FILLED, filled_qty=fill.qty, avg_price=fill.avg_price,
                         price_source=fill.source, reason="filled")
        self._log.info(
            "order.filled", signal_id=p.signal.signal_id, order_link_id=p.request.order_link_id, order_id=p.ack.order_id,
            symbol=p.request.symbol, side=p.request.side.value, qty=_s(fill.qty), avg_price=_s(fill.avg_price),
            price_source=fill.source, confirmed_via=via, reduce_only=result.reduce_only,
            take_profit=_s(result.take_profit), stop_loss=_s(result.stop_loss),
            fill_ms=round((time.monotonic() - p.placed_mono) * 1000, 1),
        )
        self._finish(p, result)
        return True

    def _finish(self, p: _Pending, result: ExecutionResult) -> None:
        result = replace(result, finished_at=self._clock())
        self._pending.pop(p.request.order_link_id, None)
        _release(self._busy_symbols, p.request.symbol, p.signal.signal_id)
        self._ledger.record(result)

    # --- closes (through Panic) ------------------------------------------------------------

    def _close(self, signal: Signal, portfolio: PortfolioSnapshot) -> ExecutionResult:
        pos = portfolio.position(signal.symbol)
        size = pos.signed_size if pos is not None else _ZERO
        side = Side.SELL if size > 0 else Side.BUY
        decision = self._ask_risk(RiskCheck(
            signal_id=signal.signal_id,
            intent=OrderIntent(symbol=signal.symbol, side=side, qty=abs(size), price=pos.price if pos else None,
                               reduce_only=True),
            portfolio=portfolio, trading_state=self._state, is_close=True,
        ))
        if not decision.allowed:
            raise Blocked("risk", decision.reason, risk_check=decision.check)
        panic = self._ctx.directory.get(Role.PANIC)
        if panic is None:
            raise Blocked("panic_unavailable", "no Panic actor to close through")
        try:
            future = panic.ask(ClosePosition(symbol=signal.symbol, reason=signal.reason or "flat signal",
                                             signal_id=signal.signal_id), block=False)
        except pykka.ActorDeadError:
            raise Blocked("panic_unavailable", "Panic is not running") from None
        self._log.info("executor.close_requested", signal_id=signal.signal_id, symbol=signal.symbol,
                       position=_s(size), reduce_only=True)
        self._closing_symbols[signal.symbol] = signal.signal_id
        timeout = float(self._risk_cfg.close_timeout_s)
        # Panic's mailbox may hold a whole panic (or a reconciliation) before this close: its answer is
        # still waited for that long, and the symbol stays closing meanwhile.
        panic_cfg = self._node.panic
        late_s = float(panic_cfg.deadline_s + panic_cfg.close_deadline_s + panic_cfg.fill_timeout_s)
        ref = self.actor_ref

        def tell(done: _CloseDone) -> None:
            try:
                ref.tell(done)
            except pykka.ActorDeadError:
                pass

        def wait() -> None:  # off the mailbox: the next signal is not held up by a slow close
            res, err, gave_up, waited = None, None, False, timeout
            try:
                res = future.get(timeout=timeout)
            except pykka.Timeout:
                tell(_CloseDone(signal.signal_id, signal.symbol, None, None, unanswered=True, waited_s=timeout))
                waited = timeout + late_s
                try:
                    res = future.get(timeout=late_s)
                except pykka.Timeout:
                    gave_up = True
                except Exception as exc:
                    err = f"{type(exc).__name__}: {exc}"
            except Exception as exc:
                err = f"{type(exc).__name__}: {exc}"
            tell(_CloseDone(signal.signal_id, signal.symbol, res, err, gave_up=gave_up, waited_s=waited))

        threading.Thread(target=wait, name=f"close-{signal.symbol}", daemon=True).start()
        return ExecutionResult(signal_id=signal.signal_id, symbol=signal.symbol, direction=signal.direction.value,
                               outcome=ExecutionOutcome.PENDING, reduce_only=True, side=side, qty=abs(size),
                               reason="close requested from Panic")

    def _on_close_done(self, msg: _CloseDone) -> None:
        previous = self._ledger.get(msg.signal_id)
        base = previous or ExecutionResult(signal_id=msg.signal_id, symbol=msg.symbol, direction="flat",
                                           outcome=ExecutionOutcome.PENDING, reduce_only=True)
        if msg.unanswered or msg.gave_up:
            released = msg.gave_up
            reason = (f"Panic did not answer within {round(msg.waited_s, 2)} s: the close may still complete; "
                      "check the position on the venue")
            log = self._log.error if released else self._log.warning
            log("executor.close_unanswered", signal_id=msg.signal_id, symbol=msg.symbol, waited_s=round(msg.waited_s, 2),
                symbol_released=released)
            self._ledger.record(replace(base, outcome=ExecutionOutcome.UNKNOWN, reason=reason, finished_at=self._clock()))
            if released:
                _release(self._closing_symbols, msg.symbol, msg.signal_id)
            return
        _release(self._closing_symbols, msg.symbol, msg.signal_id)
        r = msg.result
        if not isinstance(r, CloseResult):  # no answer, a timeout, or not Panic's answer: never raise here (a tell)
            error = msg.error or f"Panic answered {type(r).__name__}, not a CloseResult"
            self._log.error("executor.close_failed", signal_id=msg.signal_id, symbol=msg.symbol, error=error)
            self._ledger.record(replace(base, outcome=ExecutionOutcome.FAILED, reason=error, finished_at=self._clock()))
            return
        outcome = {
            CloseOutcome.CLOSED: ExecutionOutcome.CLOSED,
            CloseOutcome.ALREADY_FLAT: ExecutionOutcome.ALREADY_FLAT,
            CloseOutcome.FAILED: ExecutionOutcome.FAILED,
        }[r.outcome]
        result = replace(base, outcome=outcome, order_id=r.order_id, order_link_id=r.order_link_id,
                         filled_qty=r.closed_qty, avg_price=r.avg_price, price_source="order" if r.avg_price else None,
                         reduce_only=r.reduce_only, reason=r.error or r.outcome.value, finished_at=self._clock())
        fields = dict(signal_id=msg.signal_id, symbol=msg.symbol, outcome=outcome.value, order_id=r.order_id,
                      order_link_id=r.order_link_id, closed_qty=_s(r.closed_qty), avg_price=_s(r.avg_price),
                      reduce_only=r.reduce_only, conditionals_cancelled=r.conditionals_cancelled)
        if outcome is ExecutionOutcome.FAILED:
            self._log.error("executor.close_failed", **fields, error=r.error)
        else:
            self._log.info("executor.closed", **fields)
        self._ledger.record(result)


__all__ = [
    "Blocked",
    "Executor",
    "Fill",
    "SignalLedger",
    "fill_from",
    "order_qty",
    "price_deviation_pct",
    "protective_levels",
    "reference_price",
    "vwap",
]
