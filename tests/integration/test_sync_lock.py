"""Every sync write goes through the cross-process lock, like the DbWriter's (DATA-002)."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from infra.store import HistoryStore, StoreBusy
from infra.store.sync import HistorySync
from infra.store.testing import FakeVenue
from messages.types import UTC, utc_to_ms

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)

_HOLDER = """
import sys
from infra.logging import configure_logging
configure_logging(console="off")
from infra.store import HistoryStore, StoreBusy
with HistoryStore(sys.argv[1], owner="test-node").session():
    print("held", flush=True)
    sys.stdin.readline()
"""


@pytest.fixture
def holder(tmp_path):
    db = tmp_path / "sim.duckdb"
    HistoryStore(db).write_bars([])  # create the file
    child = subprocess.Popen([sys.executable, "-c", _HOLDER, str(db)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert child.stdout.readline().strip() == "held"
    yield db, child
    child.kill()
    child.wait(timeout=10)


def test_a_sync_waits_for_the_file_and_writes_only_when_it_has_it(holder):
    db, child = holder
    venue = FakeVenue(utc_to_ms(NOW))
    store = HistoryStore(db, lock_timeout_s=20)
    done, failure = threading.Event(), []

    def run() -> None:
        try:
            HistorySync(store, venue, now_ms=lambda: venue.now_ms).sync("BTCUSDT", "1", NOW - timedelta(days=1), NOW)
        except BaseException as exc:
            failure.append(exc)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert not done.wait(0.5), "the sync used the file while another process held it"
    child.stdin.write("go\n")
    child.stdin.flush()
    assert done.wait(30) and not failure, failure
    with store.session() as s:
        assert s.count() == 1440


def test_a_sync_that_cannot_get_the_file_fails_naming_the_holder(holder):
    db, _ = holder
    venue = FakeVenue(utc_to_ms(NOW))
    store = HistoryStore(db, lock_timeout_s=0.3)
    with pytest.raises(StoreBusy) as err:
        HistorySync(store, venue, now_ms=lambda: venue.now_ms).sync("BTCUSDT", "1", NOW - timedelta(days=1), NOW)
    assert "test-node" in str(err.value) and str(db) in str(err.value)
    assert venue.requests == []  # it did not fetch what it could not store
