"""Is the history file one this program can read? Checked before anything writes to it.

`HistoryStore.session()` migrates, so it writes. A damaged file must be
refused before that, and left byte for byte as it was: `verify_store`
opens it read-only, under the same cross-process lock as every session,
and reads its schema version and tables. A missing file is fine (the first
session creates it).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import duckdb

from infra.store.errors import SchemaTooNew, StoreBusy, StoreUnreadable
from infra.store.lock import StoreLock
from infra.store.schema import LATEST_VERSION, MIGRATIONS

# What every version this program knows has: a file without them is not our history.
_TABLES = ("store_meta", "ohlcv", "series", "venue_holes")
_DUCKDB_LOCK_RE = re.compile(r"Conflicting lock is held in (?P<prog>.+?) \(PID (?P<pid>\d+)\)")


def verify_store(path: Path, *, lock_timeout_s: float = 30.0, owner: str | None = None,
                 catch_up_days: int | None = None) -> bool:
    """True if the file exists and reads as a history, False if it does not exist yet.

    Raises StoreUnreadable (damaged / not ours), SchemaTooNew, or StoreBusy
    (the lock, or a process that opened the file directly, did not free up).
    """
    path = Path(path)
    if not path.exists():
        return False
    if not path.is_file():
        raise StoreUnreadable(path, "it is not a regular file", catch_up_days)
    if path.stat().st_size == 0:
        raise StoreUnreadable(path, "it is empty (0 bytes)", catch_up_days)
    lock = StoreLock(path, owner=owner)
    started = time.monotonic()
    with lock.hold(lock_timeout_s):
        conn = lock.while_foreign(lambda: _open_read_only(path, catch_up_days), lock_timeout_s, started)
        try:
            tables = {r[0] for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}
            if not tables:
                return True  # a DuckDB file nothing was written to yet: the first session migrates it
            missing = [t for t in _TABLES if t not in tables]
            if missing:
                raise StoreUnreadable(path, f"a DuckDB file, but not a history: no table {', '.join(missing)}",
                                      catch_up_days)
            rows = conn.execute("SELECT value FROM store_meta WHERE key = 'schema_version'").fetchall()
            version = int(rows[0][0]) if rows else 0
            if version > LATEST_VERSION:
                raise SchemaTooNew(path, version, MIGRATIONS[-1].version)
            # Reading every table through once finds a damaged block DuckDB only meets on use.
            for table in ("ohlcv", "series", "venue_holes"):
                conn.execute(f"SELECT count(*) FROM {table}").fetchall()
        except duckdb.Error as exc:
            raise StoreUnreadable(path, _first_line(exc), catch_up_days) from None
        except ValueError as exc:
            raise StoreUnreadable(path, f"schema version unreadable: {exc}", catch_up_days) from None
        finally:
            conn.close()
    return True


def _open_read_only(path: Path, catch_up_days: int | None) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(path), read_only=True)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            match = _DUCKDB_LOCK_RE.search(str(exc))
            holder = (f"pid {match['pid']} ({match['prog']}), which opened the file without the node's lock"
                      if match else "a process that opened the file without the node's lock")
            raise StoreBusy(path, holder, 0.0) from None
        raise StoreUnreadable(path, _first_line(exc), catch_up_days) from None
    except duckdb.Error as exc:
        raise StoreUnreadable(path, _first_line(exc), catch_up_days) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
