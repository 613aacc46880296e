"""The risk section: every field the trading path reads is in config.yaml, validated, and incoherent limits are named."""

from __future__ import annotations

from decimal import Decimal

import pytest
import yaml

from infra.config import ConfigError, RiskConfig, load_config
from tests.conftest import REPO


def test_config_yaml_sets_every_risk_field():
    shipped = yaml.safe_load((REPO / "config.yaml").read_text())["risk"]
    assert set(shipped) == set(RiskConfig.model_fields)
    assert load_config(REPO / "config.yaml").node.risk.max_drawdown_pct == Decimal("5")


@pytest.mark.parametrize(("body", "field", "words"), [
    ("risk:\n  max_position_usd: 3000\n", "risk", "max_position_usd cannot exceed max_total_exposure_usd"),
    ("risk:\n  default_order_usd: 5000\n  max_position_usd: 1000\n", "risk", "every default order would be blocked"),
    ("risk:\n  fill_stream_wait_s: 20\n", "risk", "fill_stream_wait_s must be shorter"),
    ("risk:\n  max_drawdown_pct: 0\n", "risk.max_drawdown_pct", "greater than 0"),
    ("risk:\n  max_funding_cost_usd: -1\n", "risk.max_funding_cost_usd", "greater than or equal to 0"),
    ("risk:\n  default_stop_loss_pct: 80\n", "risk.default_stop_loss_pct", "less than or equal to 50"),
])
def test_incoherent_or_bad_risk_settings_are_named(write_config, body, field, words):
    with pytest.raises(ConfigError) as info:
        load_config(write_config(body))
    assert any(f == field and words in reason for f, reason in info.value.problems), info.value.problems
