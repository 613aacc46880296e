"""The preflight and start-up safety against a scripted account on loopback.

The integration tests run the same checks against the simulator; here each
failure is planted precisely (a withdrawal permission, a skewed clock, a
hedge-mode symbol whose switch is blocked, ...) and the report must list
every one of them, and nothing else.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass, field

import pytest
from pydantic import SecretStr

from infra.bybit import Gateway
from infra.bybit.account_safety import prepare_account
from infra.bybit.preflight import PreflightRefused, Status, require_preflight, run_preflight
from infra.bybit.testing import Reply, ScriptedVenue, envelope, instrument_row, serve_instruments
from infra.config import AppConfig, Credentials, NodeConfig, RiskConfig, SymbolConfig, TradingMode, Venue

pytestmark = pytest.mark.timeout(30)

CREDS = Credentials(api_key=SecretStr("pf-key"), api_secret=SecretStr("pf-secret"), source="environment")
ALL_RISK = {name: getattr(RiskConfig(), name) for name in RiskConfig.model_fields}


@dataclass
class Account:
    """Just enough account state for the preflight's questions."""

    skew_ms: int = 0
    permissions: dict = field(default_factory=lambda: {"ContractTrade": ["Order", "Position"], "Wallet": ["AccountTransfer"]})
    read_only: int = 0
    ips: list = field(default_factory=lambda: ["203.0.113.7"])
    hedge: set = field(default_factory=set)  # symbols in hedge mode
    switch_blocked: set = field(default_factory=set)  # 110024: a position blocks the switch
    open_position: set = field(default_factory=set)  # hedge symbols with an open long leg
    leverage: dict = field(default_factory=lambda: {"BTCUSDT": "5", "ETHUSDT": "3"})
    dcp: bool = True
    dcp_window: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def install(self, venue: ScriptedVenue) -> None:
        serve_instruments(venue, instrument_row("BTCUSDT"), instrument_row("ETHUSDT", tick="0.01", step="0.01", min_qty="0.01"))
        venue.on("GET", "/v5/market/time", self._time)
        venue.on("GET", "/v5/user/query-api", lambda r: Reply(body=envelope({"readOnly": self.read_only, "permissions": self.permissions, "ips": self.ips})))
        venue.on("GET", "/v5/position/list", self._positions)
        venue.on("POST", "/v5/position/switch-mode", self._switch)
        venue.on("POST", "/v5/position/set-leverage", self._set_leverage)
        venue.on("GET", "/v5/account/query-dcp-info", self._dcp_info)
        venue.on("POST", "/v5/order/disconnected-cancel-all", self._set_dcp)
        venue.on("GET", "/v5/order/realtime", lambda r: Reply(body=envelope({"list": [], "nextPageCursor": "", "category": "linear"})))

    def _time(self, _req):
        now_ns = time.time_ns() + self.skew_ms * 1_000_000
        return Reply(body=envelope({"timeSecond": str(now_ns // 10**9), "timeNano": str(now_ns)}, time_ms=now_ns // 10**6))

    def _row(self, symbol: str, idx: int) -> dict:
        if symbol in self.open_position and idx == 1:
            return {"symbol": symbol, "positionIdx": idx, "side": "Buy", "size": "0.01", "avgPrice": "65000",
                    "leverage": self.leverage[symbol]}
        return {"symbol": symbol, "positionIdx": idx, "side": "", "size": "0", "avgPrice": "0", "leverage": self.leverage[symbol]}

    def _positions(self, req):
        symbol = req.query["symbol"]
        with self.lock:
            rows = [self._row(symbol, 1), self._row(symbol, 2)] if symbol in self.hedge else [self._row(symbol, 0)]
        return Reply(body=envelope({"list": rows, "nextPageCursor": "", "category": "linear"}))

    def _switch(self, req):
        symbol = req.body["symbol"]
        with self.lock:
            if symbol in self.switch_blocked:
                return Reply(body=envelope(ret_code=110024, ret_msg="position exists, cannot switch position mode"))
            if symbol not in self.hedge:
                return Reply(body=envelope(ret_code=110025, ret_msg="Position mode is not modified"))
            self.hedge.discard(symbol)
        return Reply(body=envelope())

    def _set_leverage(self, req):
        with self.lock:
            if self.leverage[req.body["symbol"]] == req.body["buyLeverage"]:
                return Reply(body=envelope(ret_code=110043, ret_msg="leverage not modified"))
            self.leverage[req.body["symbol"]] = req.body["buyLeverage"]
        return Reply(body=envelope())

    def _dcp_info(self, _req):
        infos = [{"product": "DERIVATIVES", "dcpStatus": "ON", "timeWindow": str(self.dcp_window or 10)}] if self.dcp else []
        return Reply(body=envelope({"dcpInfos": infos}))

    def _set_dcp(self, req):
        if not self.dcp:
            return Reply(body=envelope(ret_code=10005, ret_msg="permission denied"))
        self.dcp_window = req.body["timeWindow"]
        return Reply(body={"retCode": 0, "retMsg": "success"})


def app_config(**node) -> AppConfig:
    settings = {
        "venue": Venue.SIM,
        "trading_mode": TradingMode.PAPER,
        "symbols": {"BTCUSDT": SymbolConfig(intervals=("1",)), "ETHUSDT": SymbolConfig(intervals=("1",))},
        "risk": RiskConfig(**ALL_RISK),
        **node,
    }
    return AppConfig(node=NodeConfig(**settings), credentials=CREDS, source="test")


@pytest.fixture
def account():
    return Account()


@pytest.fixture
def venue(account):
    with ScriptedVenue() as v:
        account.install(v)
        yield v


def gateway_for(venue, app: AppConfig) -> Gateway:
    return Gateway.from_config(app, venue.urls)


def statuses(report) -> dict[str, Status]:
    return {c.name: c.status for c in report.checks}


def test_healthy_paper_account_passes_and_arms_dcp(venue, account):
    app = app_config()
    gateway = gateway_for(venue, app)
    try:
        report = run_preflight(gateway, app)
    finally:
        gateway.close()
    assert report.ok, report.render()
    assert statuses(report)["live_confirmation"] is Status.SKIP
    assert [c.name for c in report.checks if c.status is Status.PASS] == [
        "venue_mode", "rest_host", "credentials", "risk_limits", "clock_skew", "api_key", "instruments", "one_way_mode", "leverage", "dcp"
    ]
    assert account.dcp_window == app.node.exchange.dcp_window_s
    assert "PASSED" in report.render()


def test_every_failure_is_listed_in_one_report(venue, account):
    account.skew_ms = 5_000
    account.permissions["Wallet"].append("Withdraw")
    account.hedge |= {"ETHUSDT"}
    account.switch_blocked |= {"ETHUSDT"}
    account.dcp = False
    app = app_config(exchange={"require_dcp": True})
    gateway = gateway_for(venue, app)
    try:
        report = run_preflight(gateway, app)
    finally:
        gateway.close()
    assert not report.ok
    failed = {c.name for c in report.failed}
    assert failed == {"clock_skew", "api_key", "one_way_mode", "leverage", "dcp"}, report.render()
    text = report.render()
    assert "WITHDRAW" in text and "ETHUSDT: hedge mode" in text and "REFUSED: 5 checks failed" in text


def test_live_start_with_failures_is_refused_with_the_whole_report(venue, account):
    account.permissions["Wallet"].append("Withdraw")
    # A live config whose REST host is loopback, with a risk section left at defaults.
    node = NodeConfig(
        venue=Venue.MAINNET,
        trading_mode=TradingMode.LIVE,
        live_confirmed=False,
        symbols={"BTCUSDT": SymbolConfig(intervals=("1",))},
    )
    app = AppConfig(node=node, credentials=CREDS, source="test")
    gateway = gateway_for(venue, app)
    try:
        with pytest.raises(PreflightRefused) as info:
            require_preflight(gateway, app)
    finally:
        gateway.close()
    failed = {c.name for c in info.value.report.failed}
    assert failed == {"live_confirmation", "rest_host", "risk_limits", "api_key"}, info.value.report.render()
    # Nothing was changed on an account the guard refuses to write to.
    assert venue.requests("/v5/position/switch-mode") == []
    assert venue.requests("/v5/order/disconnected-cancel-all") == []


def test_hedge_account_is_switched_then_verified(venue, account):
    account.hedge |= {"BTCUSDT"}
    app = app_config()
    gateway = gateway_for(venue, app)
    try:
        safety = prepare_account(gateway, ["BTCUSDT", "ETHUSDT"], dcp_window_s=15)
    finally:
        gateway.close()
    assert safety.may_trade and safety.switched == ("BTCUSDT",)
    assert safety.dcp_armed and account.dcp_window == 15


def test_blocked_switch_leaves_trading_refused(venue, account):
    account.hedge |= {"BTCUSDT"}
    account.switch_blocked |= {"BTCUSDT"}
    app = app_config()
    gateway = gateway_for(venue, app)
    try:
        safety = prepare_account(gateway, ["BTCUSDT"], dcp_window_s=10)
    finally:
        gateway.close()
    assert not safety.may_trade
    assert "110024" in safety.one_way_problems[0]


def test_missing_dcp_is_loud_but_not_blocking(venue, account, events):
    account.dcp = False
    app = app_config()
    gateway = gateway_for(venue, app)
    try:
        safety = prepare_account(gateway, ["BTCUSDT"], dcp_window_s=10)
        report = run_preflight(gateway, app)
    finally:
        gateway.close()
    assert safety.may_trade and not safety.dcp_armed and safety.dcp_problem
    assert statuses(report)["dcp"] is Status.WARN and report.ok
    loud = [e for e in events() if e["event"] == "gateway.dcp_unavailable"]
    assert loud and all(e["level"] == "error" for e in loud)


def test_leverage_above_the_cap_is_lowered_when_applying(venue, account):
    account.leverage["BTCUSDT"] = "20"
    app = app_config()
    gateway = gateway_for(venue, app)
    try:
        read_only = run_preflight(gateway, app, apply=False)
        applied = run_preflight(gateway, app, apply=True)
    finally:
        gateway.close()
    # Read-only agrees with the start (which lowers it) and says what it would do.
    lev = next(c for c in read_only.checks if c.name == "leverage")
    assert lev.status is Status.PASS and "would lower leverage 20x -> 5x" in lev.detail
    assert statuses(applied)["leverage"] is Status.PASS
    assert account.leverage["BTCUSDT"] == "5"


def test_read_only_run_changes_nothing_and_says_what_start_up_would_do(venue, account):
    account.hedge |= {"BTCUSDT"}
    account.leverage["ETHUSDT"] = "10"
    app = app_config()
    gateway = gateway_for(venue, app)
    try:
        report = run_preflight(gateway, app, apply=False)
    finally:
        gateway.close()
    checks = {c.name: c for c in report.checks}
    assert checks["one_way_mode"].status is Status.PASS
    assert "BTCUSDT: would switch from hedge to one-way mode at start" in checks["one_way_mode"].detail
    assert "would lower leverage 10x -> 5x" in checks["leverage"].detail
    assert checks["dcp"].status is Status.PASS and "would arm" in checks["dcp"].detail
    assert "armed," not in checks["dcp"].detail  # nothing was armed
    assert report.ok
    assert [r.method for r in venue.requests() if r.method == "POST"] == []


def test_read_only_fails_what_start_up_could_not_fix(venue, account):
    account.hedge |= {"BTCUSDT"}
    account.open_position |= {"BTCUSDT"}
    app = app_config()
    gateway = gateway_for(venue, app)
    try:
        report = run_preflight(gateway, app, apply=False)
    finally:
        gateway.close()
    one_way = next(c for c in report.checks if c.name == "one_way_mode")
    assert one_way.status is Status.FAIL and "an open position" in one_way.detail
    assert [r.method for r in venue.requests() if r.method == "POST"] == []


def test_unreachable_venue_fails_each_venue_check_with_its_reason():
    from infra.bybit.clients import VenueUrls

    app = app_config(exchange={"read_attempts": 1})
    gateway = Gateway.from_config(app, VenueUrls(rest="http://127.0.0.1:9", ws_public="", ws_private=""))
    try:
        report = run_preflight(gateway, app)
    finally:
        gateway.close()
    venue_checks = {"clock_skew", "api_key", "instruments", "one_way_mode", "leverage"}
    assert venue_checks <= {c.name for c in report.failed}
    assert all("not sent" in c.detail or "cannot" in c.detail or "unknown" in c.detail for c in report.failed), report.render()


def test_report_renders_one_line_per_check():
    from infra.bybit.preflight import Check, PreflightReport

    report = PreflightReport("sim", "paper", "http://127.0.0.1:1", (Check("a", Status.PASS, "fine"), Check("bb", Status.FAIL, "broken")))
    out = io.StringIO()
    print(report.render(), file=out)
    lines = out.getvalue().splitlines()
    assert lines[1].split() == ["PASS", "a", "fine"] and lines[2].split() == ["FAIL", "bb", "broken"]
    assert lines[-1] == "REFUSED: 1 check failed: bb"


def _run_cli(config_path, rest_url, *extra):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {k: v for k, v in os.environ.items() if not k.startswith("BYBIT_")}
    env["BYBIT_NODE_EXCHANGE__REST_URL"] = rest_url
    env["NO_PROXY"] = "127.0.0.1,localhost"
    return subprocess.run(
        [sys.executable, str(REPO / "main.py"), "--config", str(config_path), "preflight", *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )


CLI_CONFIG = """
venue: sim
trading_mode: paper
log: {console: "off"}
symbols:
  BTCUSDT: {intervals: ["1"]}
risk:
  max_daily_loss_usd: 100
  max_position_usd: 1000
  max_total_exposure_usd: 2000
  max_open_positions: 2
  max_leverage: 5
  max_price_deviation_pct: 1.0
  min_balance_usd: 50
"""


@pytest.mark.timeout(60)
def test_cli_prints_the_report_and_exits_by_its_verdict(venue, account, write_config):
    config = write_config(CLI_CONFIG)
    ok = _run_cli(config, venue.urls.rest)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASSED" in ok.stdout and "one_way_mode" in ok.stdout
    account.permissions["Wallet"].append("Withdraw")
    account.skew_ms = -3000
    refused = _run_cli(config, venue.urls.rest, "--read-only")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "REFUSED: 2 checks failed: clock_skew, api_key" in refused.stdout
