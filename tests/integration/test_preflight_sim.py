"""The preflight against the simulator, in-process and as `python main.py preflight`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from infra.bybit.preflight import Status, run_preflight
from infra.config import AppConfig, NodeConfig, RiskConfig, SymbolConfig, TradingMode, Venue
from tests.conftest import REPO
from tests.integration.test_gateway_orders import make_gateway

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

RISK = """
risk:
  max_daily_loss_usd: 100
  max_position_usd: 1000
  max_total_exposure_usd: 2000
  max_open_positions: 2
  max_leverage: 5
  max_price_deviation_pct: 1.0
  min_balance_usd: 50
"""


def test_paper_preflight_passes_against_the_simulator(sim_factory, sim_creds):
    # Wall clock: the clock-skew check compares the venue's clock with ours.
    sim = sim_factory(clock=None)
    risk = RiskConfig(**{name: getattr(RiskConfig(), name) for name in RiskConfig.model_fields})
    node = NodeConfig(
        venue=Venue.SIM,
        trading_mode=TradingMode.PAPER,
        symbols={s: SymbolConfig(intervals=("1",)) for s in sim.symbols},
        risk=risk,
    )
    app = AppConfig(node=node, credentials=sim_creds, source="test")
    gateway = make_gateway(sim, sim_creds)
    try:
        report = run_preflight(gateway, app)
    finally:
        gateway.close()
    assert report.ok, report.render()
    passed = {c.name for c in report.checks if c.status is Status.PASS}
    assert passed >= {"venue_mode", "rest_host", "clock_skew", "instruments", "one_way_mode", "leverage", "dcp", "risk_limits"}
    # The simulator's key has no IP binding: trading allowed, withdrawal not, a warning.
    assert {c.name: c.status for c in report.checks}["api_key"] is Status.WARN


def _cli(config, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYBIT_")}
    env["NO_PROXY"] = "127.0.0.1,localhost"
    return subprocess.run(
        [sys.executable, str(REPO / "main.py"), "--config", str(config), "preflight", *args],
        capture_output=True, text=True, timeout=80, env=env, cwd=REPO,
    )


def test_cli_on_the_default_sim_venue_passes(write_config):
    config = write_config("venue: sim\nlog: {console: 'off'}\nsymbols:\n  BTCUSDT: {intervals: ['1']}\n" + RISK)
    done = _cli(config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASSED" in done.stdout


def test_cli_exits_non_zero_with_the_report_when_a_start_would_be_refused(write_config):
    config = write_config(
        "venue: sim\nlog: {console: 'off'}\nsymbols:\n  BTCUSDT: {intervals: ['1']}\n"
        "exchange: {require_dcp: true}\nsim: {dcp_available: false}\n" + RISK
    )
    done = _cli(config)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL  dcp" in done.stdout and "REFUSED: 1 check failed: dcp" in done.stdout
