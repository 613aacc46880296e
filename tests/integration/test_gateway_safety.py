"""Start-up safety against the simulator: one-way mode verified, DCP armed or loudly absent."""

from __future__ import annotations

import pytest

from infra.bybit.account_safety import prepare_account
from tests.integration.test_gateway_orders import make_gateway

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_dcp_is_armed_when_the_account_has_it(sim, sim_creds, events):
    gateway = make_gateway(sim, sim_creds)
    try:
        safety = prepare_account(gateway, sim.symbols, dcp_window_s=12)
        info = gateway.query_dcp()
    finally:
        gateway.close()
    assert safety.may_trade and safety.one_way
    assert safety.dcp_armed and safety.dcp_window_s == 12
    assert info.available and info.window_s == 12
    assert any(e["event"] == "gateway.dcp_armed" and e["window_s"] == 12 for e in events())


def test_missing_dcp_is_a_loud_event_and_nothing_is_armed(sim_factory, sim_creds, events):
    sim = sim_factory(dcp_available=False)
    gateway = make_gateway(sim, sim_creds)
    try:
        safety = prepare_account(gateway, sim.symbols, dcp_window_s=12)
    finally:
        gateway.close()
    assert safety.may_trade, "DCP absence is reported, not blocking"
    assert not safety.dcp_armed and safety.dcp_problem
    loud = [e for e in events() if e["event"] == "gateway.dcp_unavailable"]
    assert len(loud) == 1 and loud[0]["level"] == "error"


def test_one_way_mode_is_verified_from_the_position_rows(sim, sim_creds):
    gateway = make_gateway(sim, sim_creds)
    try:
        safety = prepare_account(gateway, sim.symbols, dcp_window_s=10)
        rows = {s: gateway.get_position_rows(s) for s in sim.symbols}
    finally:
        gateway.close()
    assert safety.one_way
    assert all(len(r) == 1 and r[0].position_idx == 0 for r in rows.values())


def test_leverage_above_the_cap_is_lowered_at_start(sim, sim_creds):
    from decimal import Decimal

    gateway = make_gateway(sim, sim_creds)
    try:
        gateway.set_leverage("BTCUSDT", Decimal("20"))
        safety = prepare_account(gateway, ["BTCUSDT"], dcp_window_s=10, max_leverage=Decimal("5"))
        after = gateway.get_position("BTCUSDT").leverage
    finally:
        gateway.close()
    assert safety.may_trade and safety.leverage_ok
    assert after == Decimal("5")
