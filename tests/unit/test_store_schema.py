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
