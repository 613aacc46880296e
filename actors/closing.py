"""Closing positions: close first, cancel after (DATA-018), and the panic procedure (DATA-017).

Plain classes that only call the gateway, so a unit test drives them with a
fake gateway and the `panic` command runs them with no node at all. The
Panic actor binds them to its mailbox.

The one rule everything here keeps: a position's take-profit / stop-loss
stay on the venue until a reduce-only close of that position has been
accepted and (for a full close) filled. A close that fails, is refused, or
fills only in part leaves them in place and is reported as FAILED. A
reduce-only order can never add exposure, so a retry (a fresh orderLinkId
per attempt, the position re-read first) can never over-close.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Iterable

from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay
from tenacity.wait import wait_exponential_jitter

from infra.bybit.errors import ExchangeError, OrderRefused, Rejected
from infra.bybit.models import OrderRequest, OrderType, new_order_link_id, order_link_id
from infra.logging import get_logger
from messages.account import Order, OrderStatus, Position
from messages.commands import CloseOutcome, CloseResult, PanicReport
from messages.types import Side

log = get_logger("panic")

# Smallest disconnect-cancel-all window Bybit takes: on a panic, orders die 3 s after the link does.
DCP_MIN_WINDOW_S = 3
_NOT_OPEN = frozenset({110001, 110008})  # cancel of an order that already ended
_TERMINAL = frozenset({OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.PARTIALLY_FILLED_CANCELED,
                       OrderStatus.REJECTED, OrderStatus.DEACTIVATED})


@dataclass(frozen=True)
class ClosePolicy:
    """How hard one close tries: attempts and a deadline, exponential backoff with jitter between them."""

    attempts: int = 5
    deadline_s: float = 10.0
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 1.0
    fill_timeout_s: float = 5.0


class CloseIncomplete(ExchangeError):
    """The close was accepted but did not fill the whole position (yet): try the remainder again."""


def _retryable(exc: BaseException) -> bool:
    # Refused inside the process (below minimum, venue/mode mismatch): repeating cannot help.
    return isinstance(exc, ExchangeError) and not isinstance(exc, OrderRefused)


def _opposite(side: Side | None) -> Side:
    return Side.SELL if side is Side.BUY else Side.BUY


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Closer:
    """Closes one symbol's position reduce-only, then cancels that symbol's conditional orders.

    `gateway` should be the panic-lane view (`gateway.on_lane(Lane.PANIC)`).
    """

    def __init__(self, gateway: Any, policy: ClosePolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        self._gw = gateway
        self._policy = policy or ClosePolicy()
        self._sleep = sleep
        self._clock = clock

    # --- one position --------------------------------------------------------------------

    def close_position(self, symbol: str, reason: str, signal_id: str | None = None, *,
                       link_seed: str | None = None, known: Position | None = None,
                       fetch_price: bool = True) -> CloseResult:
        """Close `symbol`'s whole position. Never raises: failures come back as FAILED results.

        `signal_id` (or `link_seed`) makes the orderLinkIds deterministic per attempt,
        so the same request sent twice finds its own order instead of placing a second.
        `known`: a position just read by the caller, used for the first attempt only
        (a stale size just leaves a remainder that the next attempt re-reads).
        `fetch_price`: read the close order back for its fill price (a panic skips it:
        time to flat matters more than the figure).
        """
        seed = signal_id or link_seed or new_order_link_id("c")
        policy = self._policy
        attempt_no = 0
        fields = {"symbol": symbol, "reason": reason, "signal_id": signal_id}
        retrying = Retrying(
            stop=stop_after_attempt(policy.attempts) | stop_after_delay(policy.deadline_s),
            wait=wait_exponential_jitter(multiplier=policy.backoff_initial_s, max=policy.backoff_max_s,
                                         jitter=policy.backoff_initial_s),
            retry=retry_if_exception(_retryable),
            sleep=self._sleep,
            before_sleep=lambda s: log.warning(
                "close.retry", **fields, attempt=s.attempt_number,
                error=_describe(s.outcome.exception()) if s.outcome else None,
            ),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    attempt_no += 1
                    first = known if attempt_no == 1 else None
                    link = order_link_id(seed, symbol, attempt_no, prefix="c")
                    return self._close_once(symbol, signal_id, link, first, fetch_price)
        except Exception as exc:  # noqa: BLE001 - every failure is a FAILED result, never an escaping error
            log.error("close.failed", **fields, attempts=attempt_no, error=_describe(exc),
                      protection="take-profit/stop-loss left in place")
            return CloseResult(symbol=symbol, outcome=CloseOutcome.FAILED, signal_id=signal_id, error=_describe(exc))
        raise AssertionError("unreachable: tenacity either returns or re-raises")

    def _close_once(self, symbol: str, signal_id: str | None, link: str, position: Position | None,
                    fetch_price: bool) -> CloseResult:
        if position is None:
            # A strict symbol read: an empty answer raises (DATA-019), it never reads as "flat".
            position = self._gw.get_position(symbol)
        if not position.is_open:
            log.info("close.already_flat", symbol=symbol, signal_id=signal_id)
            return CloseResult(symbol=symbol, outcome=CloseOutcome.ALREADY_FLAT, signal_id=signal_id)
        request = OrderRequest(
            symbol=symbol,
            side=_opposite(position.side),
            order_type=OrderType.MARKET,
            qty=position.size,
            order_link_id=link,
            reduce_only=True,
        )
        # Refused or unknown: raises, the stops stay, and the next attempt re-reads the position first
        # (a "reduce-only, position is zero" refusal then reads as flat).
        ack = self._gw.create_order(request)
        self._await_flat(symbol, ack.order_id, position.size)
        # The position is flat: only now may its conditional orders go.
        cancelled, cancel_error = self._cancel_conditionals(symbol)
        order = self._order_after(symbol, ack.order_id) if fetch_price else None
        # None: not read back (a panic) - the size it closed; a Decimal 0 is a real answer (a stop beat it).
        filled = order.cum_exec_qty if order is not None and order.cum_exec_qty is not None else position.size
        avg = None
        if order is not None:
            avg = order.avg_price if order.avg_price is not None else self._avg_from_executions(symbol, order)
        log.info("close.done", symbol=symbol, signal_id=signal_id, order_id=ack.order_id, order_link_id=link,
                 side=request.side.value, closed_qty=str(filled), avg_price=str(avg) if avg is not None else None,
                 conditionals_cancelled=cancelled)
        return CloseResult(
            symbol=symbol,
            outcome=CloseOutcome.CLOSED,
            signal_id=signal_id,
            order_id=ack.order_id,
            order_link_id=link,
            closed_qty=filled,
            avg_price=avg,
            conditionals_cancelled=cancelled,
            error=cancel_error,
        )

    def _await_flat(self, symbol: str, order_id: str, size: Decimal) -> None:
        """Return once a strict read shows the position flat; CloseIncomplete if the close ended
        short of that (a partial IOC fill) or the fill timeout passed. The position is the
        authority: flat is flat, whichever order made it so."""
        deadline = self._clock() + self._policy.fill_timeout_s
        pause = 0.02
        filled_seen = 0
        while True:
            position = self._gw.get_position(symbol)
            if not position.is_open:
                return
            order = self._gw.get_order(symbol, order_id=order_id)
            if order is not None and order.order_status is OrderStatus.FILLED:
                # Filled, yet a position is open: an entry in flight added to it. One more look
                # (the two views may be a moment apart), then the remainder is a new close.
                filled_seen += 1
            if order is not None and (order.order_status in _TERMINAL and order.order_status is not OrderStatus.FILLED
                                      or filled_seen > 1):
                raise CloseIncomplete(f"{symbol} close {order_id} ended {order.order_status.value}: "
                                      f"{position.size} of {size} still open")
            if self._clock() >= deadline:
                raise CloseIncomplete(f"{symbol} still {position.size} open {self._policy.fill_timeout_s} s "
                                      f"after close {order_id}")
            self._sleep(pause)
            pause = min(pause * 2, 0.5)

    def _order_after(self, symbol: str, order_id: str) -> Order | None:
        try:
            return self._gw.get_order(symbol, order_id=order_id)
        except ExchangeError as exc:
            log.warning("close.price_unknown", symbol=symbol, order_id=order_id, error=_describe(exc))
            return None

    def _avg_from_executions(self, symbol: str, order: Order) -> Decimal | None:
        """avgPrice came back empty (DATA-021): the real price is in the order's executions, never a quote."""
        try:
            fills = [e for e in self._gw.get_executions(symbol=symbol) if e.order_id == order.order_id and e.is_trade]
        except ExchangeError as exc:
            log.warning("close.price_unknown", symbol=symbol, order_id=order.order_id, error=_describe(exc))
            return None
        qty = sum((e.exec_qty for e in fills), Decimal(0))
        return sum((e.exec_qty * e.exec_price for e in fills), Decimal(0)) / qty if qty else None

    def _cancel_conditionals(self, symbol: str) -> tuple[int, str | None]:
        """After the full close: that symbol's conditional orders (TP/SL, trailing stops, stops), named
        one by one from the open-order list, so what "conditional" means never depends on a venue
        filter. The position is flat, so a failure here leaves only harmless reduce-only leftovers:
        it is reported, not retried forever. One that ended meanwhile (110001) is not an error."""
        try:
            conditionals = [o for o in self._gw.get_open_orders(symbol) if o.is_conditional]
        except ExchangeError as exc:
            log.warning("close.cancel_failed", symbol=symbol, error=_describe(exc))
            return 0, f"conditional orders not listed: {_describe(exc)}"
        if not conditionals:
            return 0, None
        # Read AFTER listing: an entry that filled after the close opened a new position whose own
        # TP/SL may be in that list. Open (or unknown) now: every listed stop may protect it, none go.
        # Open later: its stops were created after the list, so the list does not hold them.
        try:
            reopened = self._gw.get_position(symbol).is_open
            why = "a position is open again (an entry filled after the close): its stops stay"
        except ExchangeError as exc:
            reopened, why = True, f"the position could not be read after the close ({_describe(exc)}): the stops stay"
        if reopened:
            log.warning("close.cancel_skipped", symbol=symbol, order_ids=[o.order_id for o in conditionals], why=why)
            return 0, f"conditional orders not cancelled: {why}"
        cancelled, failures = 0, []
        for order in conditionals:
            try:
                self._gw.cancel_order(symbol, order_id=order.order_id)
                cancelled += 1
            except Rejected as exc:
                if exc.ret_code not in _NOT_OPEN:
                    failures.append(f"{order.order_id}: {_describe(exc)}")
            except ExchangeError as exc:
                failures.append(f"{order.order_id}: {_describe(exc)}")
        if failures:
            log.warning("close.cancel_failed", symbol=symbol, error="; ".join(failures))
            return cancelled, f"conditional orders not cancelled: {'; '.join(failures)}"
        return cancelled, None

    # --- moving a stop ---------------------------------------------------------------------

    def move_stop(self, symbol: str, *, stop_loss: Decimal | None = None, take_profit: Decimal | None = None) -> bool:
        """Move the position's stop / take-profit in place (trading-stop amends): never cancel-then-create,
        so there is no moment without a stop."""
        return bool(self._gw.set_trading_stop(symbol, stop_loss=stop_loss, take_profit=take_profit))


class Flattener:
    """The panic procedure: tighten DCP, close every position first, cancel the rest, verify flat over REST."""

    def __init__(self, gateway: Any, symbols: Iterable[str], policy: ClosePolicy | None = None, *,
                 deadline_s: float = 30.0, verify_rounds: int = 3, max_workers: int = 8,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        self._gw = gateway
        self._symbols = tuple(dict.fromkeys(symbols))
        self._closer = Closer(gateway, policy, sleep=sleep, clock=clock)
        self._deadline_s = deadline_s
        self._verify_rounds = verify_rounds
        self._max_workers = max_workers
        self._sleep = sleep
        self._clock = clock

    def run(self, reason: str) -> PanicReport:
        """Never raises; the report says what is flat and what is not. Logs `panic.report` once."""
        started = self._clock()
        started_at = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        panic_id = new_order_link_id("p")
        log.warning("panic.started", reason=reason, symbols=list(self._symbols))
        errors: list[str] = []
        closed: list[CloseResult] = []
        cancelled = 0
        # DCP is tightened beside the closes, not before them: the closes are what makes the account safe.
        dcp_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="panic-dcp")
        dcp_future = dcp_pool.submit(self._tighten_dcp, errors)
        flat, time_to_flat = False, None
        open_positions: list[str] = []
        open_orders: list[str] = []
        rounds = 0
        # No opening order leaves while the panic runs; one already on the wire is waited for before
        # each verification, or its position could appear after "flat" was reported.
        with self._gw.halt_entries(f"panic: {reason}"):
            while rounds < self._verify_rounds and self._clock() - started < self._deadline_s:
                rounds += 1
                positions, _ = self._open_positions(errors)
                closed += self._close_all(positions, reason, f"{panic_id}-{rounds}")
                # Before the cancel-all: an entry landing between its position read and its cancel
                # would lose its stops to it.
                settled = self._settle_entries(started, errors)
                cancelled += self._cancel_remaining(errors)
                # Verify over REST: a position an in-flight entry opened after its close shows up here.
                positions, complete = self._open_positions(errors)
                orders = self._open_orders(errors)
                open_positions = [f"{p.symbol}:{p.side.value if p.side else '?'}:{p.size}" for p in positions]
                if not complete:
                    open_positions.append("<unknown: a position read failed>")
                if not settled:
                    open_positions.append("<unknown: an opening order was still in flight>")
                open_orders = ["<unknown: the order read failed>"] if orders is None else [
                    f"{o.symbol}:{o.order_id}" for o in orders]
                if complete and settled and not positions and orders == []:
                    flat, time_to_flat = True, round(self._clock() - started, 3)
                    break
        dcp = dcp_future.result()
        dcp_pool.shutdown()
        report = PanicReport(
            reason=reason,
            started_at=started_at,
            flat=flat,
            time_to_flat_s=time_to_flat,
            duration_s=round(self._clock() - started, 3),
            closed=tuple(closed),
            orders_cancelled=cancelled,
            still_open_positions=tuple(open_positions),
            still_open_orders=tuple(open_orders),
            dcp=dcp,
            rounds=rounds,
            errors=tuple(errors),
        )
        emit = log.info if flat else log.error
        emit("panic.report", **report.as_dict())
        return report

    def _settle_entries(self, started: float, errors: list[str]) -> bool:
        """Wait (within the deadline) for the opening creates in flight; their symbols are read strictly from now on."""
        remaining = self._deadline_s - (self._clock() - started)
        symbols, settled = self._gw.settle_entries(max(0.0, remaining))
        self._symbols += tuple(s for s in sorted(symbols) if s not in self._symbols)
        if not settled:
            errors.append(f"opening orders still in flight on {sorted(symbols)} at the deadline")
        return settled

    def _tighten_dcp(self, errors: list[str]) -> str:
        try:
            info = self._gw.query_dcp()
            if not info.available:
                return "unavailable on this account"
            self._gw.arm_dcp(DCP_MIN_WINDOW_S)
            return f"window tightened to {DCP_MIN_WINDOW_S} s"
        except Exception as exc:  # noqa: BLE001 - a panic goes on without DCP; the report says so
            errors.append(f"dcp: {_describe(exc)}")
            return f"not tightened: {_describe(exc)}"

    def _open_positions(self, errors: list[str]) -> tuple[list[Position], bool]:
        """Open positions, and whether the answer is complete.

        The settle-coin list finds symbols we do not follow, but an empty list
        there may be a dropped answer (DATA-019), so every symbol is also read
        strictly one by one (all reads at once). Complete means every read succeeded.
        """
        symbols = self._symbols
        with ThreadPoolExecutor(max_workers=max(1, min(self._max_workers, len(symbols) + 1)),
                                thread_name_prefix="panic-read") as pool:
            listed = pool.submit(self._gw.get_open_positions)
            strict = {s: pool.submit(self._gw.get_position, s) for s in symbols}
        found: dict[str, Position] = {}
        complete = True
        try:
            for p in listed.result():
                found[p.symbol] = p
                if p.symbol not in self._symbols:
                    self._symbols += (p.symbol,)  # read strictly from the next round on
        except Exception as exc:  # noqa: BLE001 - recorded; the strict reads still count
            errors.append(f"position list: {_describe(exc)}")
            complete = False
        for symbol, future in strict.items():
            try:
                p = future.result()
            except Exception as exc:  # noqa: BLE001
                errors.append(f"position {symbol}: {_describe(exc)}")
                complete = False
                continue
            if p.is_open:
                found[symbol] = p
            else:
                found.pop(symbol, None)
        return list(found.values()), complete

    def _open_orders(self, errors: list[str]) -> list[Order] | None:
        try:
            return list(self._gw.get_open_orders())
        except Exception as exc:  # noqa: BLE001
            errors.append(f"open orders: {_describe(exc)}")
            return None

    def _close_all(self, positions: list[Position], reason: str, seed: str) -> list[CloseResult]:
        if not positions:
            return []
        workers = max(1, min(self._max_workers, len(positions)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="panic-close") as pool:
            futures = [pool.submit(self._closer.close_position, p.symbol, f"panic: {reason}", None, link_seed=seed,
                                   known=p, fetch_price=False)
                       for p in positions]
            return [f.result() for f in futures]

    def _cancel_remaining(self, errors: list[str]) -> int:
        """Cancel every open order left. A symbol whose position is still open (its close failed) or
        unknown (the read failed) keeps its conditional orders: only its resting orders go."""
        orders = self._open_orders(errors)
        if not orders:
            return 0
        total = 0
        for symbol in sorted({o.symbol for o in orders}):
            try:
                keep_stops = self._gw.get_position(symbol).is_open
            except Exception as exc:  # noqa: BLE001 - unknown: keep the stops
                errors.append(f"position {symbol} before cancel: {_describe(exc)}")
                keep_stops = True
            try:
                acks = self._gw.cancel_all(symbol, order_filter="Order" if keep_stops else None)
            except Exception as exc:  # noqa: BLE001
                errors.append(f"cancel {symbol}: {_describe(exc)}")
                continue
            total += len(acks)
        return total
