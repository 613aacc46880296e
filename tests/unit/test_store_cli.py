"""`python main.py gaps` (and the busy-file path every history command shares)."""

from __future__ import annotations

import threading
from datetime import datetime

import pytest

import main
from infra.config import load_config
from infra.store import BarRange, HistoryStore
from infra.store.testing import make_series, opens
from messages.types import UTC

pytestmark = pytest.mark.timeout(30)

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def config(write_config):
    return write_config("log:\n  console: \"off\"\ndb_writer:\n  lock_timeout_s: 0.3\n")


def test_gaps_lists_gaps_and_venue_holes_per_series(config, capsys):
    store = HistoryStore.for_node(load_config(config).node)
    slots = list(opens("1", T0, 10))
    store.write_bars(make_series("BTCUSDT", "1", T0, 500, missing=[5, 6, 100]))
    store.write_bars(make_series("ETHUSDT", "60", T0, 50))
    with store.session() as s:
        s.add_venue_holes("BTCUSDT", "1", [BarRange(slots[5], slots[6])])
    assert main.main(["--config", str(config), "gaps"]) == 0
    out = capsys.readouterr().out
    assert "BTCUSDT 1 gap: [2024-01-01T00:06:00Z, 2024-01-01T00:07:00Z) (1 bars)" in out
    assert "BTCUSDT 1 gap: [2024-01-01T01:40:00Z, 2024-01-01T01:41:00Z) (1 bars)" in out
    assert "BTCUSDT 1 venue hole: [2024-01-01T00:05:00Z, 2024-01-01T00:06:00Z) (1 bars)" in out
    assert "ETHUSDT 60 gap" not in out and "2 fillable gap(s)" in out


def test_gaps_on_a_missing_file_says_so_and_creates_nothing(config, capsys):
    assert main.main(["--config", str(config), "gaps"]) == 0
    assert "no history yet" in capsys.readouterr().out
    assert not HistoryStore.for_node(load_config(config).node).exists()


def test_a_busy_file_is_reported_with_its_holder(config, capsys):
    store = HistoryStore.for_node(load_config(config).node, owner="the running node")
    store.write_bars(make_series("BTCUSDT", "1", T0, 5))
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.session():
            held.set()
            release.wait(20)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        assert main.main(["--config", str(config), "gaps"]) == 1
    finally:
        release.set()
        holder.join(10)
    err = capsys.readouterr().err
    assert str(store.path) in err and "the running node" in err and "waited 0.3 s" in err


def test_sync_refuses_an_unconfigured_symbol_without_interval(config, capsys):
    assert main.main(["--config", str(config), "sync", "--symbol", "SOLUSDT"]) == 2
    assert "SOLUSDT is not in the config" in capsys.readouterr().err
