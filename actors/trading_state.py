"""The trading state as a function of what the node knows: one value, one rule, every change with a reason.

    HALTED    until positions/wallet are seeded, every stream is fresh (ready) and Risk has
              seeded today's PnL; for good after a panic; while the daily-loss latch is tripped
    ACTIVE    ready and Risk seeded, no latch, no panic
    REDUCING  data went stale after having been ready (closes only)
    HALTED    for good once the node is stopping (its sockets going down are no data fault)

On top, while the Supervisor's escalation is active (restarts past their
limit) trading goes no higher than the state it names (REDUCING or HALTED).

Plain class, no threads: the Panic actor feeds it messages and tells
whoever trades about each change it returns.
"""

from __future__ import annotations

from messages.control import ReadinessChanged, RiskStatus, SupervisorEscalated, TradingState, TradingStateChanged

_RANK = {TradingState.HALTED: 0, TradingState.REDUCING: 1, TradingState.ACTIVE: 2}


class TradingGate:
    def __init__(self) -> None:
        self.state = TradingState.HALTED
        self.previous = TradingState.HALTED
        self.reason = "starting: waiting for seeded state, fresh data and Risk's PnL seed"
        self._ready = False
        self._ever_ready = False
        self._stale_reasons: tuple[str, ...] = ("not ready yet",)
        self._risk_seeded = False
        self._risk_reason = "risk not seeded yet"
        self._latched = False
        self._panic: str | None = None
        self._escalation: SupervisorEscalated | None = None
        self._stopping = False

    def view(self) -> TradingStateChanged:
        """The current state in the shape of its last change (the answer to GetTradingState)."""
        return TradingStateChanged(state=self.state, previous=self.previous, reason=self.reason)

    def on_readiness(self, msg: ReadinessChanged) -> TradingStateChanged | None:
        self._ready = msg.ready
        self._ever_ready = self._ever_ready or msg.ready
        self._stale_reasons = tuple(msg.reasons) or tuple(f"{s} stale" for s in msg.stale_streams)
        return self._recompute()

    def on_risk(self, msg: RiskStatus) -> TradingStateChanged | None:
        self._risk_seeded = msg.seeded
        self._latched = msg.latched
        self._risk_reason = msg.reason
        return self._recompute()

    def on_escalation(self, msg: SupervisorEscalated) -> TradingStateChanged | None:
        self._escalation = msg if msg.active else None
        return self._recompute()

    def on_panic(self, reason: str) -> TradingStateChanged | None:
        if self._panic is None:
            self._panic = reason
        return self._recompute()

    def on_stopping(self) -> TradingStateChanged | None:
        self._stopping = True
        return self._recompute()

    @property
    def panicked(self) -> bool:
        return self._panic is not None

    def _target(self) -> tuple[TradingState, str]:
        state, reason = self._own_target()
        cap = self._escalation
        if cap is not None and _RANK[cap.state] < _RANK[state]:
            return cap.state, f"supervisor escalation: {cap.reason}"
        return state, reason

    def _own_target(self) -> tuple[TradingState, str]:
        if self._panic is not None:
            return TradingState.HALTED, f"panic: {self._panic}"
        if self._latched:
            return TradingState.HALTED, f"daily loss latch tripped{': ' + self._risk_reason if self._risk_reason else ''}"
        if self._stopping:
            return TradingState.HALTED, "node stopping: nothing new is sent"
        if not self._risk_seeded:
            return TradingState.HALTED, f"risk not seeded{': ' + self._risk_reason if self._risk_reason else ''}"
        if self._ready:
            return TradingState.ACTIVE, "state seeded, data fresh, risk seeded"
        why = "; ".join(self._stale_reasons) or "not ready"
        if not self._ever_ready:
            return TradingState.HALTED, f"not ready yet: {why}"
        return TradingState.REDUCING, f"data stale: {why}"

    def _recompute(self) -> TradingStateChanged | None:
        target, reason = self._target()
        if target is self.state:
            self.reason = reason
            return None
        self.previous, self.state, self.reason = self.state, target, reason
        return TradingStateChanged(state=target, previous=self.previous, reason=reason)
