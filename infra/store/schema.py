"""The history file's schema and its migrations. The version lives in the file.

Each migration moves the file from version N-1 to N inside one transaction,
so a file is always at a version this list describes. A file at a version
newer than this program knows is refused (`SchemaTooNew`), never written.

Tables (version 1):

* `ohlcv`: one row per bar, keyed by (symbol, interval, open_time). The
  primary key is what makes duplicates impossible: a second write of a bar
  replaces the first. `open_time` is a TIMESTAMP holding UTC (no time zone
  type on purpose: calendar arithmetic such as "+1 month" must not depend on
  the session's time zone). Prices and volumes are exact decimals.
  `source` says whether the bar came from the WebSocket or REST.
* `series`: per (symbol, interval): last sync, last heal. (Version 1 also
  kept the first and last stored bar here, rewritten by every write; from
  version 2 they are read from `ohlcv` itself, so they cannot go stale and
  a write does not pay for them.)
* `venue_holes`: ranges of bar open times [first_open, end_open) for which
  the venue itself returned no bars, so sync does not ask again and gap
  reports can tell "the venue has nothing" from "we are missing data".
* `store_meta`: key/value, holds `schema_version`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import duckdb

from infra.logging import get_logger
from infra.store.errors import SchemaTooNew
from messages.types import INTERVALS

# Wide enough for a meme coin's volume (20 integer digits) and a sub-satoshi
# price (18 decimals); stored as a 128-bit integer, so exact.
DECIMAL = "DECIMAL(38,18)"
DECIMAL_PRECISION, DECIMAL_SCALE = 38, 18

_INTERVAL_LIST = ", ".join(f"'{i}'" for i in INTERVALS)


@dataclass(frozen=True)
class Migration:
    version: int
    why: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "bars keyed by (symbol, interval, open_time), series metadata, venue-hole ledger",
        (
            "CREATE TABLE store_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
            f"""CREATE TABLE ohlcv (
                symbol VARCHAR NOT NULL,
                interval VARCHAR NOT NULL CHECK (interval IN ({_INTERVAL_LIST})),
                open_time TIMESTAMP NOT NULL,
                open {DECIMAL} NOT NULL,
                high {DECIMAL} NOT NULL,
                low {DECIMAL} NOT NULL,
                close {DECIMAL} NOT NULL,
                volume {DECIMAL} NOT NULL,
                turnover {DECIMAL} NOT NULL,
                source VARCHAR NOT NULL CHECK (source IN ('ws', 'rest')),
                PRIMARY KEY (symbol, interval, open_time)
            )""",
            """CREATE TABLE series (
                symbol VARCHAR NOT NULL,
                interval VARCHAR NOT NULL,
                first_open TIMESTAMP,
                last_open TIMESTAMP,
                last_sync_at TIMESTAMP,
                last_heal_at TIMESTAMP,
                PRIMARY KEY (symbol, interval)
            )""",
            """CREATE TABLE venue_holes (
                symbol VARCHAR NOT NULL,
                interval VARCHAR NOT NULL,
                first_open TIMESTAMP NOT NULL,
                end_open TIMESTAMP NOT NULL CHECK (end_open > first_open),
                found_at TIMESTAMP NOT NULL,
                PRIMARY KEY (symbol, interval, first_open)
            )""",
        ),
    ),
    Migration(
        2,
        "series' first/last bar read from ohlcv, not kept by every write (a write paid ~4 ms a batch for them)",
        (
            "ALTER TABLE series DROP COLUMN first_open",
            "ALTER TABLE series DROP COLUMN last_open",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def schema_version(conn: duckdb.DuckDBPyConnection) -> int:
    """0 for an empty file."""
    # fetchall, not fetchone: DuckDB refuses new work on a connection with an unfinished result.
    try:
        rows = conn.execute("SELECT value FROM store_meta WHERE key = 'schema_version'").fetchall()
    except duckdb.CatalogException:
        return 0
    return int(rows[0][0]) if rows else 0


def migrate(conn: duckdb.DuckDBPyConnection, path: Path, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the file to the latest version; return that version."""
    known = migrations[-1].version
    found = schema_version(conn)
    if found > known:
        raise SchemaTooNew(path, found, known)
    for migration in migrations:
        if migration.version <= found:
            continue
        conn.execute("BEGIN TRANSACTION")
        try:
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT OR REPLACE INTO store_meta VALUES ('schema_version', ?)", [str(migration.version)]
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        get_logger("infra.store").info(
            "db.migrated", path=str(path), from_version=found, to_version=migration.version, why=migration.why
        )
        found = migration.version
    return found
