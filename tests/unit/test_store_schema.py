"""The schema is created and migrated by the code; the version lives in the file."""

from __future__ import annotations

import duckdb
import pytest

from infra.store import HistoryStore, SchemaTooNew
from infra.store.schema import LATEST_VERSION, MIGRATIONS, Migration, migrate, schema_version

pytestmark = pytest.mark.timeout(20)


def test_a_new_file_gets_the_latest_schema(tmp_path):
    store = HistoryStore(tmp_path / "sim.duckdb")
    with store.session() as s:
        assert schema_version(s.conn) == LATEST_VERSION
        tables = {r[0] for r in s.conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"ohlcv", "series", "venue_holes", "store_meta"} <= tables


def test_an_older_file_is_migrated_step_by_step(tmp_path):
    path = tmp_path / "old.duckdb"
    conn = duckdb.connect(str(path))
    assert migrate(conn, path) == LATEST_VERSION
    extra = Migration(LATEST_VERSION + 1, "test column", ("ALTER TABLE series ADD COLUMN note VARCHAR",))
    assert migrate(conn, path, (*MIGRATIONS, extra)) == LATEST_VERSION + 1
    assert schema_version(conn) == LATEST_VERSION + 1
    conn.execute("SELECT note FROM series").fetchall()
    # running it again changes nothing
    assert migrate(conn, path, (*MIGRATIONS, extra)) == LATEST_VERSION + 1
    conn.close()


def test_a_failed_migration_leaves_the_file_at_its_old_version(tmp_path):
    path = tmp_path / "f.duckdb"
    conn = duckdb.connect(str(path))
    migrate(conn, path)
    broken = Migration(LATEST_VERSION + 1, "broken", ("ALTER TABLE series ADD COLUMN x INT", "SELECT * FROM nowhere"))
    with pytest.raises(duckdb.Error):
        migrate(conn, path, (*MIGRATIONS, broken))
    assert schema_version(conn) == LATEST_VERSION
    assert "x" not in {r[0] for r in conn.execute("DESCRIBE series").fetchall()}
    conn.close()


def test_a_file_from_a_newer_program_is_refused(tmp_path):
    path = tmp_path / "new.duckdb"
    conn = duckdb.connect(str(path))
    migrate(conn, path)
    conn.execute("UPDATE store_meta SET value = ? WHERE key = 'schema_version'", [str(LATEST_VERSION + 5)])
    conn.close()
    with pytest.raises(SchemaTooNew) as err:
        with HistoryStore(path).session():
            pass
    assert err.value.found == LATEST_VERSION + 5 and str(path) in str(err.value)


def test_a_version_1_file_keeps_its_bars_and_marks_and_reads_first_and_last_from_the_bars(tmp_path):
    from datetime import datetime

    from infra.store.testing import make_series
    from messages.types import UTC

    path = tmp_path / "v1.duckdb"
    conn = duckdb.connect(str(path))
    assert migrate(conn, path, MIGRATIONS[:1]) == 1
    bars = make_series("BTCUSDT", "1", datetime(2024, 1, 1, tzinfo=UTC), 5)
    for b in bars:
        conn.execute("INSERT INTO ohlcv VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     [b.symbol, b.interval, b.open_time.replace(tzinfo=None), b.open, b.high, b.low, b.close,
                      b.volume, b.turnover, b.source.value])
    # Version 1 kept first/last in `series` (here deliberately stale) next to the sync time.
    conn.execute("INSERT INTO series VALUES ('BTCUSDT', '1', '2020-01-01', '2020-01-02', '2024-02-01 10:00', NULL)")
    conn.execute("INSERT INTO series VALUES ('ETHUSDT', '5', NULL, NULL, '2024-02-02 11:00', NULL)")
    conn.close()

    with HistoryStore(path).session() as s:
        assert schema_version(s.conn) == LATEST_VERSION
        btc, eth = s.series()
        assert s.count() == 5
    assert (btc.first_open, btc.last_open) == (bars[0].open_time, bars[-1].open_time)
    assert btc.last_sync_at == datetime(2024, 2, 1, 10, tzinfo=UTC)
    assert (eth.symbol, eth.first_open, eth.last_open) == ("ETHUSDT", None, None)
    assert eth.last_sync_at == datetime(2024, 2, 2, 11, tzinfo=UTC)
