"""Panic actor: owner of the trading state and of every close.

* Trading state (`actors.trading_state.TradingGate`): starts HALTED, ACTIVE
  once the StateStore says ready and Risk says seeded, REDUCING while data
  is stale, HALTED on a panic or a tripped latch, no higher than the
  Supervisor's escalation while it lasts. Each change is told to
  the Executor and Risk and logged as `trading.state_changed`.
* `ClosePosition` (asked by the Executor): reduce-only close first, that
  symbol's conditional orders cancelled only after it filled (DATA-018).
* `Panic` (command line, Risk's latch, escalation): HALTED, then the panic
  procedure of `actors.closing.Flattener` (DATA-017), one `panic.report`.
* Reconciliation (`actors.reconcile`, DATA-019): when the node first
  becomes ready and every `panic.reconcile_interval_s`.

Its own mailbox, and its own REST lane: every close and panic request
rides `Lane.PANIC`, so nothing urgent waits behind market data or a
history sync. Handlers never raise on a tell (a raising tell handler
would kill the actor that must close positions).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable

import pykka

from actors.base import ActorContext, NodeActor, Role
from actors.closing import ClosePolicy, Closer, Flattener
from actors.reconcile import Reconciler
from actors.trading_state import TradingGate
from infra.bybit.rate_limit import Lane
from messages.commands import ClosePosition, CloseOutcome, CloseResult, Panic as PanicCommand, PanicReport
from messages.control import (
    NodeStopping,
    ReadinessChanged,
    RiskStatus,
    SupervisorEscalated,
    Tick,
    TradingStateChanged,
)
from messages.queries import GetHealth, GetSnapshot, GetTradingState, HealthReport, StateSnapshot
from messages.types import now_utc

RECONCILE = "reconcile"
RESYNC = "resync"

# A panic halts the node for the rest of the process, also across a restart of this
# actor by the Supervisor: remembered per node (its Directory), not in the actor.
_PANICKED: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()
_PANICKED_LOCK = threading.Lock()


class Panic(NodeActor):
    role = Role.PANIC

    def __init__(self, ctx: ActorContext):
        super().__init__(ctx)
        node = ctx.config.node
        cfg = node.panic
        self._cfg = cfg
        self._gate = TradingGate()
        policy = ClosePolicy(
            attempts=cfg.close_attempts,
            deadline_s=float(cfg.close_deadline_s),
            fill_timeout_s=float(cfg.fill_timeout_s),
        )
        gateway = ctx.gateway
        self._closer: Closer | None = None
        self._flattener: Flattener | None = None
        self._reconciler: Reconciler | None = None
        if gateway is not None:
            panic_lane = gateway.on_lane(Lane.PANIC)
            self._closer = Closer(panic_lane, policy)
            self._flattener = Flattener(panic_lane, list(node.symbols), policy, deadline_s=float(cfg.deadline_s),
                                        verify_rounds=cfg.verify_rounds)
            self._reconciler = Reconciler(gateway)
        self._reconciled_once = False
        with _PANICKED_LOCK:
            earlier = _PANICKED.get(ctx.directory)
        if earlier is not None:
            self._gate.on_panic(earlier)

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {
            ReadinessChanged: self._on_readiness,
            RiskStatus: self._on_risk,
            SupervisorEscalated: lambda msg: self._announce(self._gate.on_escalation(msg)),
            NodeStopping: lambda _: self._announce(self._gate.on_stopping(), routine=True),
            PanicCommand: self._on_panic,
            ClosePosition: self._on_close,
            GetTradingState: lambda _: self._gate.view(),
            Tick: self._on_tick,
        }

    def on_start(self) -> None:
        super().on_start()
        self._log.info("trading.state_initial", state=self._gate.state.value, reason=self._gate.reason)
        # A replacement Panic (after a restart) learns readiness from the StateStore instead of
        # waiting for the next flip; Risk re-tells its status to every new Panic by itself.
        self.actor_ref.tell(Tick(name=RESYNC))
        if self._gateway_missing("start"):
            return
        interval = float(self._cfg.reconcile_interval_s)
        if interval > 0:
            self.every(interval, lambda: Tick(name=RECONCILE), name=f"timer-{RECONCILE}")

    # --- trading state ---------------------------------------------------------------------

    def _on_readiness(self, msg: ReadinessChanged) -> None:
        self._announce(self._gate.on_readiness(msg))
        if msg.ready and not self._reconciled_once:
            # At start: once the private state is seeded there is something to compare against.
            self._reconcile()

    def _on_risk(self, msg: RiskStatus) -> None:
        change = self._gate.on_risk(msg)
        if change is not None:
            self._announce(change)
            return
        # No change, but the sender may be a Risk just restarted (it starts HALTED and its first status
        # can be "seeded", which changes nothing here): it hears the current state anyway.
        self._ctx.directory.tell(Role.RISK, self._gate.view())

    def _announce(self, change: TradingStateChanged | None, *, routine: bool = False) -> None:
        """Log and tell a change; `routine` (an orderly stop) is said at info, not as a warning."""
        if change is None:
            return
        log = self._log.warning if change.state.value != "ACTIVE" and not routine else self._log.info
        log("trading.state_changed", state=change.state.value, previous=change.previous.value, reason=change.reason)
        for role in (Role.EXECUTOR, Role.RISK):
            self._ctx.directory.tell(role, change)

    # --- closes and panics -----------------------------------------------------------------

    def _on_close(self, msg: ClosePosition) -> CloseResult:
        if self._closer is None:
            self._gateway_missing("close")
            return CloseResult(symbol=msg.symbol, outcome=CloseOutcome.FAILED, signal_id=msg.signal_id,
                               error="no gateway: this node cannot reach the venue")
        return self._closer.close_position(msg.symbol, msg.reason, msg.signal_id)

    def _on_panic(self, msg: PanicCommand) -> PanicReport:
        with _PANICKED_LOCK:
            _PANICKED.setdefault(self._ctx.directory, msg.reason)
        self._announce(self._gate.on_panic(msg.reason))
        if self._flattener is None:
            self._gateway_missing("panic")
            return _no_gateway_report(msg.reason)
        try:
            return self._flattener.run(msg.reason)
        except Exception as exc:  # noqa: BLE001 - the actor that closes positions must outlive any bug
            self._log.error("panic.crashed", reason=msg.reason, error=repr(exc))
            return _no_gateway_report(msg.reason, error=repr(exc))

    # --- reconciliation ------------------------------------------------------------------------

    def _on_tick(self, msg: Tick) -> None:
        if msg.name == RECONCILE:
            self._reconcile()
        elif msg.name == RESYNC:
            self._resync_readiness()

    def _resync_readiness(self) -> None:
        ref = self._ctx.directory.get(Role.STATE_STORE)
        if ref is None:
            return
        try:
            health = ref.ask(GetHealth(), timeout=float(self._cfg.snapshot_timeout_s))
        except (pykka.ActorDeadError, pykka.Timeout):
            return
        if isinstance(health, HealthReport) and health.ready:
            self._on_readiness(ReadinessChanged(ready=True))

    def _reconcile(self) -> None:
        if self._reconciler is None:
            return
        self._reconciled_once = True
        try:
            self._reconciler.run(self._snapshot())
        except Exception as exc:  # noqa: BLE001 - a tell handler must not raise
            self._log.error("reconcile.crashed", error=repr(exc))

    def _snapshot(self) -> StateSnapshot | None:
        ref = self._ctx.directory.get(Role.STATE_STORE)
        if ref is None:
            return None
        try:
            answer = ref.ask(GetSnapshot(), timeout=float(self._cfg.snapshot_timeout_s))
        except (pykka.ActorDeadError, pykka.Timeout) as exc:
            self._log.warning("reconcile.failed", step="state snapshot", error=repr(exc))
            return None
        return answer if isinstance(answer, StateSnapshot) else None

    def _gateway_missing(self, what: str) -> bool:
        if self._ctx.gateway is None:
            self._log.error("panic.no_gateway", action=what, consequence="closes and panics fail; nothing is reconciled")
            return True
        return False


def _no_gateway_report(reason: str, error: str = "no gateway: this node cannot reach the venue") -> PanicReport:
    return PanicReport(
        reason=reason, started_at=now_utc().isoformat().replace("+00:00", "Z"), flat=False, time_to_flat_s=None,
        duration_s=0.0, closed=(), orders_cancelled=0, still_open_positions=("<unknown>",),
        still_open_orders=("<unknown>",), dcp="not tightened", rounds=0, errors=(error,),
    )
