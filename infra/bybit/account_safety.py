"""Startup safety of the account: one-way mode set and verified, disconnect-cancel-all armed.

The reviewed design raised inside a singleton's constructor; here it is one
call with a result the caller acts on: trading stays HALTED unless
`AccountSafety.may_trade`. One-way mode is not trusted from the switch's
answer (110025 "not modified" and 110024 "position exists" both leave the
mode unknown to us); it is read back from the position rows of every
symbol (`positionIdx` 0, one row).

DCP is granted per account by Bybit. When `query-dcp-info` lists
DERIVATIVES the window is set; otherwise `gateway.dcp_unavailable` is
logged at error level on every start. The window only counts while a
private WebSocket subscribes `dcp.future`: that subscription is the
WsPrivate actor's job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Iterable

from infra.bybit.errors import ExchangeError
from infra.bybit.gateway import Gateway
from infra.bybit.models import DcpInfo
from infra.logging import get_logger

log = get_logger("gateway")


@dataclass(frozen=True)
class AccountSafety:
    one_way: bool
    one_way_problems: tuple[str, ...] = ()
    switched: tuple[str, ...] = ()
    dcp: DcpInfo = field(default_factory=lambda: DcpInfo(available=False))
    dcp_armed: bool = False
    dcp_window_s: int | None = None
    dcp_problem: str | None = None
    leverage_ok: bool = True
    leverage_problems: tuple[str, ...] = ()

    @property
    def may_trade(self) -> bool:
        """Trading needs a verified one-way account within the leverage cap (DCP absence is loud, not blocking)."""
        return self.one_way and self.leverage_ok


def unlisted_symbols(gateway: Gateway, symbols: Iterable[str]) -> list[str]:
    """One line per configured symbol the venue does not list, with the listed ones spelled like it."""
    import difflib

    listed = gateway.listed_symbols()
    problems = []
    for symbol in symbols:
        if symbol in listed:
            continue
        near = difflib.get_close_matches(symbol, listed, n=5, cutoff=0.6)
        hint = f"did you mean {', '.join(near)}?" if near else f"it lists {len(listed)} symbols, none spelled like it"
        problems.append(f"{symbol} is not listed by the venue ({hint})")
    return problems


def ensure_one_way(gateway: Gateway, symbols: Iterable[str], *, switch: bool = True) -> tuple[bool, tuple[str, ...], tuple[str, ...]]:
    """Switch each symbol to one-way (when `switch`) and verify it from the position rows.

    Returns (verified, problems, switched_symbols).
    """
    symbols = list(symbols)
    switched: list[str] = []
    would: list[str] = []  # read-only: the switches start-up would make
    switch_errors: dict[str, str] = {}
    if switch:
        for symbol in symbols:
            try:
                if gateway.switch_to_one_way(symbol):
                    switched.append(symbol)
                    log.info("gateway.one_way_set", symbol=symbol)
            except ExchangeError as exc:
                # 110024/110028: a position or open order blocks the switch. The
                # read-back below decides whether that matters.
                switch_errors[symbol] = str(exc)
    problems: list[str] = []
    for symbol in symbols:
        try:
            rows = gateway.get_position_rows(symbol)
        except ExchangeError as exc:
            problems.append(f"{symbol}: position mode unknown ({exc})")
            continue
        if len(rows) != 1 or rows[0].position_idx != 0:
            why = f"{symbol}: hedge mode (positionIdx {sorted(r.position_idx for r in rows)})"
            if symbol in switch_errors:
                why += f"; switching failed: {switch_errors[symbol]}"
            elif not switch:
                # Read-only: say what start-up would do, and refuse only what it could not.
                blocker = _switch_blocker(gateway, symbol, rows)
                if blocker is None:
                    would.append(f"{symbol}: would switch from hedge to one-way mode at start")
                    continue
                why += f"; start-up cannot switch it: {blocker}"
            problems.append(why)
    if problems:
        log.error("gateway.one_way_failed", problems=problems)
    elif not would:
        log.info("gateway.one_way_verified", symbols=symbols, switched=switched)
    return not problems, tuple(problems), tuple(switched or would)


def _switch_blocker(gateway: Gateway, symbol: str, rows: list) -> str | None:
    """Why a switch to one-way would fail (110024 an open position, 110028 open orders), if it would."""
    open_legs = [r for r in rows if r.size > 0]
    if open_legs:
        return "an open position (close it first; Bybit refuses the switch with 110024)"
    try:
        if gateway.get_open_orders(symbol):
            return "open orders (cancel them first; Bybit refuses the switch with 110028)"
    except ExchangeError as exc:
        return f"open orders unknown ({exc})"
    return None


def ensure_dcp(gateway: Gateway, window_s: int, *, arm: bool = True) -> tuple[DcpInfo, bool, str | None]:
    """Query DCP; arm it with `window_s` when the account has it. Returns (info, armed, problem)."""
    try:
        info = gateway.query_dcp()
    except ExchangeError as exc:
        problem = f"cannot query disconnect-cancel-all: {exc}"
        log.error("gateway.dcp_unavailable", reason=problem)
        return DcpInfo(available=False), False, problem
    if not info.available:
        problem = "the account has no disconnect-cancel-all for derivatives (Bybit grants it per account)"
        log.error(
            "gateway.dcp_unavailable",
            reason=problem,
            consequence="open orders stay live if the node loses its connection",
        )
        return info, False, problem
    if not arm:  # read-only: armed only if it already is, as start-up would set it
        return info, info.enabled and info.window_s == window_s, None
    try:
        gateway.arm_dcp(window_s)
    except ExchangeError as exc:
        problem = f"arming disconnect-cancel-all failed: {exc}"
        log.error("gateway.dcp_arm_failed", window_s=window_s, error=str(exc))
        return info, False, problem
    log.info("gateway.dcp_armed", window_s=window_s, needs="a private socket subscribed to dcp.future")
    return info, True, None


def ensure_leverage_cap(
    gateway: Gateway, symbols: Iterable[str], cap: Decimal, *, lower: bool = True
) -> tuple[bool, tuple[str, ...], tuple[str, ...]]:
    """Every symbol's leverage at or below `cap`, lowering it when `lower`. Returns (ok, problems, notes)."""
    problems: list[str] = []
    notes: list[str] = []
    for symbol in symbols:
        try:
            inst = gateway.instrument(symbol)
            current = _leverage_now(gateway, symbol, one_way_only=lower)
        except ExchangeError as exc:
            problems.append(f"{symbol}: {exc}")
            continue
        if cap > inst.max_leverage:
            notes.append(f"{symbol}: venue maximum {inst.max_leverage}x is below the cap")
        if current is None or current <= cap:
            notes.append(f"{symbol} {current}x")
            continue
        if not lower:  # read-only: start-up would lower it; only a venue that refuses could stop that
            notes.append(f"{symbol}: would lower leverage {current}x -> {min(cap, inst.max_leverage)}x at start")
            continue
        if lower:
            try:
                gateway.set_leverage(symbol, min(cap, inst.max_leverage))
                after = gateway.get_position(symbol).leverage
            except ExchangeError as exc:
                problems.append(f"{symbol}: {current}x above the cap {cap}x, lowering failed: {exc}")
                continue
            if after is not None and after <= cap:
                notes.append(f"{symbol} lowered {current}x -> {after}x")
                continue
            current = after
        problems.append(f"{symbol}: leverage {current}x above risk.max_leverage {cap}x")
    if problems:
        log.error("gateway.leverage_above_cap", cap=str(cap), problems=problems)
    return not problems, tuple(problems), tuple(notes)


def _leverage_now(gateway: Gateway, symbol: str, *, one_way_only: bool) -> Decimal | None:
    """The symbol's leverage. Read-only, a hedge-mode account (which start-up would switch
    first) answers with its highest leg."""
    if one_way_only:
        return gateway.get_position(symbol).leverage
    legs = [r.leverage for r in gateway.get_position_rows(symbol) if r.leverage is not None]
    return max(legs) if legs else None


def prepare_account(
    gateway: Gateway, symbols: Iterable[str], *, dcp_window_s: int, max_leverage: Decimal | None = None
) -> AccountSafety:
    """What the node runs before it may trade: one-way mode, the leverage cap, then DCP."""
    symbols = list(symbols)
    one_way, problems, switched = ensure_one_way(gateway, symbols)
    leverage_ok, leverage_problems = True, ()
    if max_leverage is not None:
        leverage_ok, leverage_problems, _ = ensure_leverage_cap(gateway, symbols, max_leverage)
    info, armed, dcp_problem = ensure_dcp(gateway, dcp_window_s)
    return AccountSafety(
        one_way=one_way,
        one_way_problems=problems,
        switched=switched,
        dcp=info,
        dcp_armed=armed,
        dcp_window_s=dcp_window_s if armed else None,
        dcp_problem=dcp_problem,
        leverage_ok=leverage_ok,
        leverage_problems=leverage_problems,
    )
