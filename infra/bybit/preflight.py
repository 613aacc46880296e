"""The preflight: every check a live start must pass, in one report.

Each check runs even when an earlier one failed (an unreachable venue
fails the venue checks one by one, with the reason), so the operator sees
every problem at once instead of fixing them one start at a time.

Checks, in order:

    venue_mode          paper <-> sim/testnet/demo, live <-> mainnet
    live_confirmation   live needs live_confirmed: true (or --i-mean-live)
    rest_host           the REST host fits the venue and the money at stake
    credentials         API keys present
    risk_limits         every risk limit set (live: set explicitly, no defaults)
    clock_skew          |venue clock - ours| <= exchange.max_clock_skew_ms
    api_key             key can trade contracts, is not read-only, cannot withdraw
    instruments         every configured symbol is listed and Trading
    one_way_mode        every symbol in one-way mode (switched first when applying)
    leverage            every symbol's leverage <= risk.max_leverage (lowered first when applying)
    dcp                 disconnect-cancel-all armed (absent: warning, or failure with require_dcp)

`apply=True` (the node's start, and `main.py preflight` by default) makes
the same idempotent changes the node makes at start (one-way mode, DCP
window, leverage down to the cap) and then checks; `apply=False` only
reads, says what start-up *would* change ("would lower leverage 10x -> 5x",
"would arm disconnect-cancel-all, window 10 s") and fails only what
start-up could not fix (hedge mode with an open position, a key that can
withdraw, ...): read-only and a real start agree on the verdict.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Callable, TextIO

from infra.bybit.account_safety import ensure_dcp, ensure_leverage_cap, ensure_one_way, unlisted_symbols
from infra.bybit.errors import ExchangeError
from infra.bybit.gateway import Gateway
from infra.bybit.venue_guard import host_problems
from infra.config import AppConfig, NodeConfig, RiskConfig, TradingMode, mode_problems
from infra.logging import get_logger, say

log = get_logger("preflight")


class Status(StrEnum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str


@dataclass(frozen=True)
class PreflightReport:
    venue: str
    trading_mode: str
    rest_url: str
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status is Status.FAIL)

    @property
    def warnings(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status is Status.WARN)

    def render(self) -> str:
        width = max(len(c.name) for c in self.checks)
        lines = [f"preflight: venue {self.venue}, trading mode {self.trading_mode}, REST {self.rest_url}"]
        lines += [f"  {c.status.value:<4}  {c.name:<{width}}  {c.detail}" for c in self.checks]
        if self.ok:
            verdict = "PASSED: a start would be allowed"
            if self.warnings:
                verdict += f" ({len(self.warnings)} warning{'s' if len(self.warnings) > 1 else ''})"
        else:
            verdict = f"REFUSED: {len(self.failed)} check{'s' if len(self.failed) > 1 else ''} failed: " + ", ".join(
                c.name for c in self.failed
            )
        lines.append(verdict)
        return "\n".join(lines)


class PreflightRefused(Exception):
    """A start refused by the preflight; `report` lists every failed check."""

    def __init__(self, report: PreflightReport):
        self.report = report
        super().__init__("preflight refused: " + ", ".join(c.name for c in report.failed))


def run_preflight(gateway: Gateway, app: AppConfig, *, apply: bool = True) -> PreflightReport:
    node = app.node
    live = node.trading_mode is TradingMode.LIVE
    symbols = list(node.symbols)
    checks: list[Check] = []

    def run(name: str, fn: Callable[[], Check]) -> None:
        try:
            check = fn()
        except ExchangeError as exc:
            check = Check(name, Status.FAIL, f"venue call failed: {type(exc).__name__}: {exc}")
        checks.append(check)

    run("venue_mode", lambda: _venue_mode(node))
    run("live_confirmation", lambda: _live_confirmation(node))
    run("rest_host", lambda: _rest_host(node, gateway.urls.rest))
    run("credentials", lambda: _credentials(app))
    run("risk_limits", lambda: _risk_limits(node.risk, live=live))
    run("clock_skew", lambda: _clock_skew(gateway, node.exchange.max_clock_skew_ms))
    run("api_key", lambda: _api_key(gateway))
    run("instruments", lambda: _instruments(gateway, symbols))
    # Account changes are refused by the gateway itself when the venue/mode
    # checks failed, so `apply` there degrades to reading.
    writable = apply and not gateway.trading_problems()
    run("one_way_mode", lambda: _one_way(gateway, symbols, switch=writable))
    run("leverage", lambda: _leverage(gateway, symbols, node.risk.max_leverage, lower=writable))
    run("dcp", lambda: _dcp(gateway, node.exchange.dcp_window_s, arm=writable, required=node.exchange.require_dcp))

    report = PreflightReport(node.venue.value, node.trading_mode.value, gateway.urls.rest, tuple(checks))
    for check in checks:
        log.info("preflight.check", check=check.name, status=check.status.value, detail=check.detail)
    if report.ok:
        log.info("preflight.passed", venue=report.venue, trading_mode=report.trading_mode, warnings=[c.name for c in report.warnings])
    else:
        log.error(
            "preflight.refused",
            venue=report.venue,
            trading_mode=report.trading_mode,
            failed={c.name: c.detail for c in report.failed},
        )
    return report


def require_preflight(gateway: Gateway, app: AppConfig) -> PreflightReport:
    """Run the preflight (applying the start-up changes); raise PreflightRefused on any failure."""
    report = run_preflight(gateway, app, apply=True)
    if not report.ok:
        raise PreflightRefused(report)
    return report


# --- the checks ----------------------------------------------------------------------


def _venue_mode(node: NodeConfig) -> Check:
    problems = mode_problems(node.venue, node.trading_mode)
    if problems:
        return Check("venue_mode", Status.FAIL, "; ".join(reason for _, reason in problems))
    return Check("venue_mode", Status.PASS, f"{node.trading_mode.value} trading on {node.venue.value}")


def _live_confirmation(node: NodeConfig) -> Check:
    if node.trading_mode is not TradingMode.LIVE:
        return Check("live_confirmation", Status.SKIP, "paper trading needs no confirmation")
    if not node.live_confirmed:
        return Check("live_confirmation", Status.FAIL, "live trading needs live_confirmed: true or --i-mean-live")
    return Check("live_confirmation", Status.PASS, "live trading confirmed")


def _rest_host(node: NodeConfig, rest_url: str) -> Check:
    problems = host_problems(node.venue, node.trading_mode, rest_url)
    if problems:
        return Check("rest_host", Status.FAIL, "; ".join(problems))
    return Check("rest_host", Status.PASS, rest_url)


def _credentials(app: AppConfig) -> Check:
    if app.credentials is None:
        return Check("credentials", Status.FAIL, "no API key: set BYBIT_API_KEY and BYBIT_API_SECRET")
    return Check("credentials", Status.PASS, f"from the {app.credentials.source}")


def _risk_limits(risk: RiskConfig, *, live: bool) -> Check:
    unset = sorted(set(RiskConfig.model_fields) - set(risk.model_fields_set))
    bad = [name for name in RiskConfig.model_fields if getattr(risk, name) is None]
    if bad:
        return Check("risk_limits", Status.FAIL, f"no value for: {', '.join(bad)}")
    if unset:
        detail = f"left at their defaults, not set in the config: {', '.join('risk.' + n for n in unset)}"
        return Check("risk_limits", Status.FAIL if live else Status.WARN, detail)
    return Check("risk_limits", Status.PASS, f"all {len(RiskConfig.model_fields)} limits set")


def _clock_skew(gateway: Gateway, max_skew_ms: int) -> Check:
    t = gateway.server_time()
    detail = f"venue clock {'ahead' if t.skew_ms >= 0 else 'behind'} by {abs(t.skew_ms)} ms (round trip {t.round_trip_ms} ms, limit {max_skew_ms} ms)"
    if abs(t.skew_ms) > max_skew_ms:
        return Check("clock_skew", Status.FAIL, detail + "; sync this machine's clock (NTP)")
    return Check("clock_skew", Status.PASS, detail)


def _api_key(gateway: Gateway) -> Check:
    info = gateway.get_api_key_info()
    problems = []
    if info.can_withdraw:
        problems.append("the key can WITHDRAW funds; create a key without the Withdraw permission")
    if info.read_only:
        problems.append("the key is read-only; it cannot place orders")
    if not info.can_trade_contracts:
        problems.append(f"the key lacks ContractTrade Order+Position (has {list(info.permissions.get('ContractTrade', ()))})")
    if problems:
        return Check("api_key", Status.FAIL, "; ".join(problems))
    if not info.ip_bound:
        return Check("api_key", Status.WARN, "trading allowed, no withdrawal; the key is not bound to an IP address")
    return Check("api_key", Status.PASS, f"trading allowed, no withdrawal, bound to {', '.join(info.ips)}")


def _instruments(gateway: Gateway, symbols: list[str]) -> Check:
    problems, fine = [], []
    unlisted = unlisted_symbols(gateway, symbols)
    problems += unlisted
    for symbol in symbols:
        if any(u.startswith(f"{symbol} ") for u in unlisted):
            continue
        try:
            inst = gateway.instrument(symbol)
        except ExchangeError as exc:
            problems.append(f"{symbol}: {exc}")
            continue
        if not inst.is_trading:
            problems.append(f"{symbol}: status {inst.status}")
        else:
            fine.append(f"{symbol} (tick {inst.tick_size}, step {inst.qty_step}, min {inst.min_qty})")
    if problems:
        return Check("instruments", Status.FAIL, "; ".join(problems))
    return Check("instruments", Status.PASS, ", ".join(fine))


def _one_way(gateway: Gateway, symbols: list[str], *, switch: bool) -> Check:
    verified, problems, switched = ensure_one_way(gateway, symbols, switch=switch)
    if not verified:
        return Check("one_way_mode", Status.FAIL, "; ".join(problems))
    if not switch and switched:  # read-only: what start-up would change
        already = [s for s in symbols if not any(w.startswith(f"{s}:") for w in switched)]
        detail = "; ".join(switched) + (f"; one-way already: {', '.join(already)}" if already else "")
        return Check("one_way_mode", Status.PASS, detail)
    detail = f"one-way mode verified for {', '.join(symbols)}"
    if switched:
        detail += f" (switched: {', '.join(switched)})"
    return Check("one_way_mode", Status.PASS, detail)


def _leverage(gateway: Gateway, symbols: list[str], cap: Decimal, *, lower: bool) -> Check:
    ok, problems, notes = ensure_leverage_cap(gateway, symbols, cap, lower=lower)
    if not ok:
        return Check("leverage", Status.FAIL, "; ".join(problems))
    return Check("leverage", Status.PASS, f"cap {cap}x: " + ", ".join(notes))


def _dcp(gateway: Gateway, window_s: int, *, arm: bool, required: bool) -> Check:
    info, armed, problem = ensure_dcp(gateway, window_s, arm=arm)
    if armed and arm:
        return Check("dcp", Status.PASS, f"disconnect-cancel-all armed, {window_s} s window")
    if armed:  # read-only: the window is already what start-up sets; start-up re-arms it anyway
        return Check("dcp", Status.PASS, f"would arm disconnect-cancel-all at start, window {window_s} s "
                                         f"(the venue reports it on with that window already)")
    if problem is None:  # read-only, available: start-up arms it
        return Check("dcp", Status.PASS, f"would arm disconnect-cancel-all at start, window {window_s} s")
    return Check("dcp", Status.FAIL if required else Status.WARN, problem + ("" if required else " (exchange.require_dcp is false)"))


# --- the command ---------------------------------------------------------------------


def preflight_command(app: AppConfig, *, apply: bool = True, out: TextIO = sys.stdout) -> int:
    """`python main.py preflight`: print the report; 0 when a start would be allowed, else 1.

    With venue `sim` a simulator is started for the run unless
    `exchange.rest_url` points at a running one (infra.venue.open_venue).
    """
    from infra.venue import open_venue

    with open_venue(app.node) as urls:
        gateway = Gateway.from_config(app, urls)
        try:
            report = run_preflight(gateway, app, apply=apply)
        finally:
            gateway.close()
    say(report.render(), file=out)
    return 0 if report.ok else 1
