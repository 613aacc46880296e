"""A history file that breaks while the node runs: one error event, not a warning every retry (issue 12)."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from messages.commands import Flush
from tests.unit.test_db_writer import T0, logged, make_series, make_writer, stored, wait_until  # noqa: F401

pytestmark = pytest.mark.timeout(30)


def test_a_broken_file_is_one_error_then_quiet_retries_until_it_is_fixed(make_writer):
    with capture_logs() as logs:
        ref, store = make_writer(max_bars=1000, interval_ms=20, retry_max_ms=40)
        store.path.parent.mkdir(parents=True, exist_ok=True)
        store.path.write_bytes(b"garbage where a DuckDB header should be" * 100)
        for bar in make_series("BTCUSDT", "1", T0, 5):
            ref.tell(bar)
        report = ref.ask(Flush(reason="requested"), timeout=10)
        assert report.written == 0 and report.pending == 5 and report.error  # the bars are kept
        # Let it retry several times on its own timer.
        ref.ask(Flush(reason="requested"), timeout=10)
        ref.ask(Flush(reason="requested"), timeout=10)
        failed = logged(logs, "db.write_failed")
        assert len(failed) == 1 and failed[0]["log_level"] == "error" and "DuckDB" in failed[0]["error"]
        assert logged(logs, "db.flush_failed") == []  # that one is for a busy file
        store.path.unlink()  # the operator moved the broken file aside
        wait_until(lambda: logged(logs, "db.flush"), what="a retry that succeeds")
    assert stored(store) == 5


def test_a_stop_during_the_catch_up_logs_the_series_it_skipped(write_config):
    from datetime import datetime

    from actors.base import ActorContext, Directory
    from actors.db_writer import DbWriter
    from infra.config import load_config
    from messages.types import UTC, utc_to_ms
    from tests.unit.test_db_writer import GatedVenue

    app = load_config(write_config(
        "symbols:\n  BTCUSDT:\n    intervals: ['1', '5']\n  ETHUSDT:\n    intervals: ['1']\n"
        "db_writer:\n  lock_wait_ms: 50\n"
    ))
    venue = GatedVenue(utc_to_ms(datetime.now(UTC)))
    with capture_logs() as logs:
        ref = DbWriter.start(ActorContext(config=app, directory=Directory()), source=venue)
        assert venue.entered.wait(10)
        stopped = ref.stop(block=False)
        venue.gate.set()
        assert stopped.get(timeout=10) is True
    (done,) = logged(logs, "db.catch_up")
    assert done["log_level"] == "warning" and done["stopped"] is True
    assert done["series"]["BTCUSDT/1"].endswith("bars")
    assert done["series"]["BTCUSDT/5"] == done["series"]["ETHUSDT/1"] == "skipped: the node stopped first"
