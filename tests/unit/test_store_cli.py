"""`python main.py gaps` (and the busy-file path every history command shares)."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from datetime import datetime

import pytest

import main
from infra.config import load_config
from infra.store import BarRange, HistoryStore
from infra.store import cli as store_cli
from infra.store.testing import FakeVenue, make_series, opens
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


class _CountsOverlap(FakeVenue):
    """Each request waits (up to 0.2 s) for `want` requests to be on the wire together: the most
    seen at once is then exactly the sync's in-flight limit, without depending on timing luck."""

    def __init__(self, now_ms: int, want: int):
        super().__init__(now_ms)
        self.want, self.active, self.most = want, 0, 0
        self._changed = threading.Condition()

    def fetch_klines(self, *args, **kwargs):
        with self._changed:
            self.active += 1
            self.most = max(self.most, self.active)
            self._changed.notify_all()
            self._changed.wait_for(lambda: self.active >= self.want, timeout=0.2)
        try:
            return super().fetch_klines(*args, **kwargs)
        finally:
            with self._changed:
                self.active -= 1


@pytest.mark.parametrize("in_flight", [1, 3])
def test_sync_keeps_the_configured_number_of_kline_requests_on_the_wire(write_config, in_flight):
    path = write_config(f"log:\n  console: \"off\"\nexchange:\n  kline_requests_in_flight: {in_flight}\n")
    app = load_config(path)
    now_ms = (int(datetime.now(UTC).timestamp() * 1000) // 60_000) * 60_000
    venue = _CountsOverlap(now_ms, want=3)

    @contextmanager
    def source(_app):
        yield venue, lambda: now_ms

    args = main.build_parser().parse_args(["sync", "--symbol", "BTCUSDT", "--interval", "1", "--days", "3"])
    assert store_cli.sync_command(app, args, source_factory=source) == 0
    assert len(venue.requests) >= 4 and venue.most == in_flight
