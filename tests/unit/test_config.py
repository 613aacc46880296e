"""Configuration: defaults, environment overrides, and every kind of bad config named clearly."""

from __future__ import annotations

from decimal import Decimal

import pytest

from infra.config import ConfigError, TradingMode, Venue, load_config
from tests.conftest import REPO


def problems(path) -> dict[str, str]:
    with pytest.raises(ConfigError) as err:
        load_config(path)
    return dict(err.value.problems)


def test_shipped_config_is_valid_and_needs_no_environment():
    app = load_config(REPO / "config.yaml")
    assert app.node.venue is Venue.SIM and app.node.trading_mode is TradingMode.PAPER
    assert app.credentials is not None and app.credentials.source == "simulator"
    assert app.node.db_path.name == "sim.duckdb"


def test_defaults_fill_what_the_file_leaves_out(write_config):
    app = load_config(write_config(""))  # holds only data_dir
    assert app.node.symbols["BTCUSDT"].intervals == ("1",)
    assert app.node.risk.max_leverage == Decimal("5")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "\n\n"])
def test_an_empty_file_is_refused_not_run_on_other_defaults(tmp_path, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    assert "the file is empty" in problems(path)["<file>"]


def test_environment_overrides_nested_fields(write_config, monkeypatch):
    monkeypatch.setenv("BYBIT_NODE_RISK__MAX_LEVERAGE", "3")
    monkeypatch.setenv("BYBIT_NODE_SYMBOLS", '{"SOLUSDT": {"intervals": ["1", "15"]}}')
    app = load_config(write_config("risk:\n  max_leverage: 7\n"))
    assert app.node.risk.max_leverage == Decimal("3")  # the environment beats the file
    assert list(app.node.symbols) == ["SOLUSDT"]


def test_unknown_key_is_named(write_config):
    got = problems(write_config("risk:\n  max_levrage: 3\n"))
    assert got == {"risk.max_levrage": "unknown setting (a typo?)"}


def test_wrong_type_is_named_with_the_value(write_config):
    got = problems(write_config("risk:\n  max_open_positions: many\nsupervisor:\n  max_restarts: -1\n"))
    assert "risk.max_open_positions" in got and "'many'" in got["risk.max_open_positions"]
    assert "supervisor.max_restarts" in got and "greater than or equal to 1" in got["supervisor.max_restarts"]


def test_every_bad_field_is_reported_at_once(write_config):
    got = problems(write_config("venue: moon\nlog:\n  level: LOUD\nsymbols:\n  btc:\n    intervals: ['2']\n"))
    assert {"venue", "log.level"} <= set(got)
    assert any(k.startswith("symbols") for k in got)


def test_log_rotation_bounds_are_checked(write_config):
    got = problems(write_config("log:\n  file_max_mb: -5\n  file_backups: 0\n"))
    assert "greater than or equal to 0" in got["log.file_max_mb"]
    assert "greater than or equal to 1" in got["log.file_backups"]
    log = load_config(write_config("log:\n  file_max_mb: 0.5\n")).node.log
    assert log.file_max_bytes == 524_288 and log.file_backups == 10


def test_live_mode_on_a_paper_venue_is_refused(write_config):
    got = problems(write_config("venue: testnet\ntrading_mode: live\nlive_confirmed: true\n"))
    assert "trading_mode" in got and "'live' is not allowed on venue 'testnet'" in got["trading_mode"]


def test_paper_mode_on_mainnet_is_refused(write_config, monkeypatch):
    monkeypatch.setenv("BYBIT_API_KEY", "k" * 18)
    monkeypatch.setenv("BYBIT_API_SECRET", "s" * 36)
    got = problems(write_config("venue: mainnet\ntrading_mode: paper\n"))
    assert "'paper' is not allowed on venue 'mainnet'" in got["trading_mode"]


def test_live_needs_explicit_confirmation(write_config, monkeypatch):
    monkeypatch.setenv("BYBIT_API_KEY", "k" * 18)
    monkeypatch.setenv("BYBIT_API_SECRET", "s" * 36)
    got = problems(write_config("venue: mainnet\ntrading_mode: live\n"))
    assert "live_confirmed" in got
    monkeypatch.setenv("BYBIT_NODE_LIVE_CONFIRMED", "true")
    assert load_config(write_config("venue: mainnet\ntrading_mode: live\n")).credentials.source == "environment"


@pytest.mark.parametrize("venue", ["testnet", "demo"])
def test_private_venue_without_keys_is_refused(write_config, venue):
    got = problems(write_config(f"venue: {venue}\n"))
    assert set(got) == {"$BYBIT_API_KEY", "$BYBIT_API_SECRET"}
    assert "needs API credentials in the environment" in got["$BYBIT_API_KEY"]


def test_half_a_key_pair_is_refused(write_config, monkeypatch):
    monkeypatch.setenv("BYBIT_API_KEY", "only-the-key")
    got = problems(write_config("venue: testnet\n"))
    assert set(got) == {"$BYBIT_API_SECRET"}


def test_the_simulator_never_gets_real_keys(write_config, monkeypatch):
    monkeypatch.setenv("BYBIT_API_KEY", "a-real-testnet-key")
    monkeypatch.setenv("BYBIT_API_SECRET", "a-real-testnet-secret")
    app = load_config(write_config(""))
    assert app.credentials.source == "simulator"
    assert app.credentials.api_key.get_secret_value() == "sim-api-key"


def test_secrets_in_the_file_are_refused(write_config):
    got = problems(write_config("exchange:\n  api_key: abc\napi_secret: xyz\n"))
    assert "exchange.api_key" in got and "api_secret" in got
    assert "never read from a file" in got["api_secret"]


def test_simulator_throwaway_credentials_are_allowed_in_the_file(write_config):
    app = load_config(write_config("sim:\n  api_key: throwaway\n  api_secret: also-throwaway\n"))
    assert app.credentials.api_key.get_secret_value() == "throwaway"


def test_unknown_environment_override_is_refused(write_config, monkeypatch):
    monkeypatch.setenv("BYBIT_NODE_RISK__MAX_LEVRAGE", "3")
    got = problems(write_config(""))
    assert got == {"$BYBIT_NODE_RISK__MAX_LEVRAGE": "unknown setting; no such field in the configuration"}


def test_bad_environment_value_names_the_variable_and_the_field(write_config, monkeypatch):
    monkeypatch.setenv("BYBIT_NODE_DB_WRITER__FLUSH_MAX_BARS", "lots")
    assert "$BYBIT_NODE_DB_WRITER__FLUSH_MAX_BARS (db_writer.flush_max_bars)" in problems(write_config(""))


def test_the_same_bad_value_from_the_file_names_only_the_field(write_config):
    assert "db_writer.flush_max_bars" in problems(write_config("db_writer:\n  flush_max_bars: lots\n"))


def test_environment_symbols_replace_the_files_symbols(write_config, monkeypatch):
    monkeypatch.setenv("BYBIT_NODE_SYMBOLS", '{"SOLUSDT": {"intervals": ["15"]}}')
    app = load_config(write_config("symbols:\n  BTCUSDT:\n    intervals: ['1']\n  ETHUSDT:\n    intervals: ['1']\n"))
    assert {s: c.intervals for s, c in app.node.symbols.items()} == {"SOLUSDT": ("15",)}


def test_symbols_variable_that_is_not_json_is_a_config_error(write_config, monkeypatch):
    monkeypatch.setenv("BYBIT_NODE_SYMBOLS", '{"BTCUSDT": {intervals: [1}')
    got = problems(write_config(""))
    assert list(got) == ["$BYBIT_NODE_SYMBOLS"] and got["$BYBIT_NODE_SYMBOLS"].startswith("not valid JSON")


def test_bad_interval_is_one_problem_not_two(write_config):
    got = problems(write_config("symbols:\n  BTCUSDT:\n    intervals: ['7']\n"))
    assert list(got) == ["symbols.BTCUSDT.intervals.0"] and "(got '7')" in got["symbols.BTCUSDT.intervals.0"]


def test_an_empty_interval_list_is_still_refused(write_config):
    assert "symbols.BTCUSDT.intervals" in problems(write_config("symbols:\n  BTCUSDT:\n    intervals: []\n"))


def test_symbol_names_are_checked(write_config):
    got = problems(write_config("symbols:\n  btc-usd:\n    intervals: ['1']\n"))
    assert "not a USDT perpetual symbol" in got["symbols"]


def test_unreadable_or_malformed_file(tmp_path):
    assert problems(tmp_path / "missing.yaml") == {"<file>": "no such file"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("venue: sim\n  oops: [\n")
    (field, reason), = problems(bad).items()
    assert field.startswith("line ") and "not valid YAML" in reason
    bad.write_text("- a\n- b\n")
    assert problems(bad) == {"<file>": "the top level must be a mapping of settings"}


def test_credentials_never_show_in_repr(write_config, monkeypatch):
    monkeypatch.setenv("BYBIT_API_KEY", "visible-key-123")
    monkeypatch.setenv("BYBIT_API_SECRET", "visible-secret-456")
    app = load_config(write_config("venue: testnet\n"))
    assert "visible-secret-456" not in repr(app) and "visible-key-123" not in repr(app)
