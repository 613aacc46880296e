"""The OHLCV history in one DuckDB file per venue.

`HistoryStore` is cheap to create and holds nothing open. Work happens in a
`session()`: take the cross-process lock, open the file, migrate it if
needed, do the work, close, release (see `lock.py` for why the file is only
open inside a session). A session is one process's exclusive use of the
file, so keep it short: one flush, one sync unit (up to 10,000 bars), one scan.

Every write goes through `StoreSession.write_bars`: one Arrow table
registered with DuckDB, one statement that removes the stored copies of
the batch's bars and one that inserts the batch (an upsert, whatever the
batch size), in one transaction (DATA-002: there is no other write path).
"""

from __future__ import annotations

import atexit
import os
import re
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import duckdb

from infra.store.batch import Batch, build_batch
from infra.store.errors import StoreBusy, StoreError
from infra.store.gaps import find_gaps
from infra.store.lock import StoreLock
from infra.store.ranges import BarRange, merge, subtract
from infra.store.schema import migrate
from messages.market import BarSource, ClosedBar
from messages.types import UTC, ms_to_utc, now_utc

_ONE = Decimal(1)
_DEFAULT_THREADS = max(1, min(4, os.cpu_count() or 1))
_DUCKDB_LOCK_RE = re.compile(r"Conflicting lock is held in (?P<prog>.+?) \(PID (?P<pid>\d+)\)")


@dataclass(frozen=True)
class SeriesInfo:
    symbol: str
    interval: str
    first_open: datetime | None
    last_open: datetime | None
    last_sync_at: datetime | None
    last_heal_at: datetime | None


@dataclass(frozen=True)
class WriteResult:
    written: int
    rejected: tuple[ClosedBar, ...]


def _utc(t: datetime | None) -> datetime | None:
    return None if t is None else t.replace(tzinfo=UTC)


def _trim(value: Decimal) -> Decimal:
    """100.500000000000000000 (the column's scale) back to 100.5; equal either way, but readable."""
    n = value.normalize()
    return n if n.as_tuple().exponent <= 0 else n.quantize(_ONE)


# Replace = delete the stored twins, then insert (measured about 20 % cheaper than
# INSERT OR REPLACE on a 1M-row file; the range predicate lets DuckDB skip row groups
# outside the batch). Nothing else: a series' first and last bar are read from ohlcv.
_UPSERT_SCRIPT = """
BEGIN TRANSACTION;
DELETE FROM ohlcv USING incoming_bars AS b
 WHERE ohlcv.open_time BETWEEN (SELECT min(open_time) FROM incoming_bars) AND (SELECT max(open_time) FROM incoming_bars)
   AND ohlcv.symbol = b.symbol AND ohlcv.interval = b.interval AND ohlcv.open_time = b.open_time;
INSERT INTO ohlcv BY NAME SELECT * FROM incoming_bars;
COMMIT;
"""


# For a batch expected to be new (a sync fills gaps): the delete above costs ~4 ms even
# when it finds nothing, more than a tenth of the batch's insert. If a bar is stored after
# all (the DbWriter got there first), the primary key refuses the insert, nothing is
# written, and the batch goes through the upsert instead.
_INSERT_SCRIPT = """
BEGIN TRANSACTION;
INSERT INTO ohlcv BY NAME SELECT * FROM incoming_bars;
COMMIT;
"""


class StoreSession:
    """One exclusive use of the open file. Created only by `HistoryStore.session()`."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, path: Path):
        self.conn = conn
        self.path = path

    # --- writes -----------------------------------------------------------

    def write_bars(self, bars: Iterable[ClosedBar]) -> WriteResult:
        """Upsert the bars in one columnar statement; a bar written twice is replaced, never duplicated."""
        return self.write_batch(build_batch(bars))

    def write_batch(self, batch: Batch, *, expect_new: bool = False) -> WriteResult:
        """Upsert a batch already in columns (`build_batch`, or sync pages from `table_from_rows`).

        `expect_new`: the bars are expected not to be stored yet, so a plain insert is tried
        first; the result is the same upsert either way.
        """
        if batch.rows == 0:
            return WriteResult(0, batch.rejected)
        if expect_new:
            try:
                self._run(_INSERT_SCRIPT, batch)
                return WriteResult(batch.rows, batch.rejected)
            except duckdb.ConstraintException:
                pass  # some bar is stored already, or twice in the batch: the upsert sorts it out
        try:
            self._run(_UPSERT_SCRIPT, batch)
        except duckdb.ConstraintException:
            # The batch holds a key twice (the delete cannot see a twin that is not stored
            # yet): the primary key refused it, nothing was written. Keep the last copy.
            batch = batch.deduplicated()
            self._run(_UPSERT_SCRIPT, batch)
        return WriteResult(batch.rows, batch.rejected)

    def _run(self, script: str, batch: Batch) -> None:
        conn = self.conn
        conn.register("incoming_bars", batch.table)
        try:
            # One call for the whole transaction: each call into DuckDB gives up and takes
            # back the interpreter lock, which the sync's fetch thread is competing for.
            conn.execute(script)
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except duckdb.Error:
                pass  # the failure came before BEGIN took effect, or DuckDB already ended it
            raise
        finally:
            conn.unregister("incoming_bars")

    def add_venue_holes(self, symbol: str, interval: str, holes: Sequence[BarRange]) -> list[BarRange]:
        """Remember ranges the venue has no bars for (merged with what is known); return the ledger."""
        if not holes:
            return self.venue_holes(symbol, interval)
        merged = merge([*self.venue_holes(symbol, interval), *holes])
        found_at = now_utc().replace(tzinfo=None)
        conn = self.conn
        conn.execute("BEGIN TRANSACTION")
        try:
            conn.execute("DELETE FROM venue_holes WHERE symbol = ? AND interval = ?", [symbol, interval])
            conn.executemany(
                "INSERT INTO venue_holes VALUES (?, ?, epoch_ms(?::BIGINT), epoch_ms(?::BIGINT), ?)",
                [[symbol, interval, h.start_ms, h.end_ms, found_at] for h in merged],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return merged

    def _touch_series(self, symbol: str, interval: str, column: str, at: datetime) -> None:
        naive = at.astimezone(UTC).replace(tzinfo=None)
        self.conn.execute(
            f"""INSERT INTO series (symbol, interval, {column}) VALUES (?, ?, ?)
                ON CONFLICT (symbol, interval) DO UPDATE SET {column} = excluded.{column}""",
            [symbol, interval, naive],
        )

    def mark_synced(self, symbol: str, interval: str, at: datetime | None = None) -> None:
        self._touch_series(symbol, interval, "last_sync_at", at or now_utc())

    def mark_healed(self, symbol: str, interval: str, at: datetime | None = None) -> None:
        self._touch_series(symbol, interval, "last_heal_at", at or now_utc())

    # --- reads ------------------------------------------------------------

    def count(self, symbol: str | None = None, interval: str | None = None) -> int:
        sql, args = "SELECT count(*) FROM ohlcv WHERE 1=1", []
        if symbol is not None:
            sql, args = sql + " AND symbol = ?", [*args, symbol]
        if interval is not None:
            sql, args = sql + " AND interval = ?", [*args, interval]
        return int(self.conn.execute(sql, args).fetchall()[0][0])

    def duplicate_keys(self) -> int:
        """Keys stored more than once. The primary key makes this 0; heal checks it anyway."""
        return int(self.conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM ohlcv GROUP BY symbol, interval, open_time HAVING count(*) > 1)"
        ).fetchall()[0][0])

    def bars(self, symbol: str, interval: str, within: BarRange | None = None) -> list[ClosedBar]:
        sql = """SELECT epoch_ms(open_time), open, high, low, close, volume, turnover, source
                 FROM ohlcv WHERE symbol = ? AND interval = ?"""
        args: list = [symbol, interval]
        if within is not None:
            sql += " AND open_time >= epoch_ms(?::BIGINT) AND open_time < epoch_ms(?::BIGINT)"
            args += [within.start_ms, within.end_ms]
        rows = self.conn.execute(sql + " ORDER BY open_time", args).fetchall()
        return [
            ClosedBar(symbol=symbol, interval=interval, open_time=ms_to_utc(t), open=_trim(o), high=_trim(h),
                      low=_trim(lo), close=_trim(c), volume=_trim(v), turnover=_trim(tv), source=BarSource(src))
            for t, o, h, lo, c, v, tv, src in rows
        ]

    def open_times(self, symbol: str, interval: str, within: BarRange) -> list[int]:
        rows = self.conn.execute(
            """SELECT epoch_ms(open_time) FROM ohlcv WHERE symbol = ? AND interval = ?
               AND open_time >= epoch_ms(?::BIGINT) AND open_time < epoch_ms(?::BIGINT) ORDER BY open_time""",
            [symbol, interval, within.start_ms, within.end_ms],
        ).fetchall()
        return [r[0] for r in rows]

    def series(self) -> list[SeriesInfo]:
        """Every series with a bar or a sync/heal record; first and last bar as stored right now."""
        return self._series_rows("", [])

    def series_info(self, symbol: str, interval: str) -> SeriesInfo | None:
        rows = self._series_rows("WHERE symbol = ? AND interval = ?", [symbol, interval])
        return rows[0] if rows else None

    def _series_rows(self, where: str, args: list) -> list[SeriesInfo]:
        # The first and last bar come from ohlcv (an aggregate over the series' rows),
        # the sync/heal times from `series`; a series may have either or both.
        rows = self.conn.execute(
            f"""WITH spans AS (SELECT symbol, interval, min(open_time) AS first_open, max(open_time) AS last_open
                               FROM ohlcv {where} GROUP BY ALL),
                     marks AS (SELECT symbol, interval, last_sync_at, last_heal_at FROM series {where})
                SELECT symbol, interval, first_open, last_open, last_sync_at, last_heal_at
                FROM spans FULL OUTER JOIN marks USING (symbol, interval)
                ORDER BY symbol, interval""",
            args * 2,
        ).fetchall()
        return [SeriesInfo(s, i, _utc(a), _utc(b), _utc(c), _utc(d)) for s, i, a, b, c, d in rows]

    def venue_holes(self, symbol: str, interval: str) -> list[BarRange]:
        rows = self.conn.execute(
            """SELECT epoch_ms(first_open), epoch_ms(end_open) FROM venue_holes
               WHERE symbol = ? AND interval = ? ORDER BY first_open""",
            [symbol, interval],
        ).fetchall()
        return [BarRange(a, b) for a, b in rows]

    def gaps(self, symbol: str, interval: str, within: BarRange | None = None) -> list[BarRange]:
        """Ranges with no stored bar, found in SQL; only the gap rows come back (DATA-003).

        Without `within`: the holes between the first and the last stored bar.
        With `within`: every missing range inside it, the edges included.
        The next bar is expected exactly one interval later (a calendar month
        for "M"), so one missing bar is always a gap, on every interval (DATA-004).
        """
        return find_gaps(self.conn, symbol, interval, within)

    def fillable_gaps(self, symbol: str, interval: str, within: BarRange | None = None) -> list[BarRange]:
        """Gaps minus the ranges the venue is known to have no bars for."""
        return subtract(self.gaps(symbol, interval, within), self.venue_holes(symbol, interval))


_open_stores: "weakref.WeakSet[HistoryStore]" = weakref.WeakSet()

# In-memory DuckDB instances that closed stores let go of, with their `threads` setting.
# Starting an instance costs ~18 ms of CPU, more than a whole unit's session; a process
# that opens one store after another (a sync per file, heal, tests) reuses them. An
# idle instance has nothing attached (`_detach` succeeded, or it was closed instead).
_IDLE_MAX = 2
_idle: list[tuple[duckdb.DuckDBPyConnection, int | None]] = []
_idle_guard = threading.Lock()


def _take_instance() -> tuple[duckdb.DuckDBPyConnection, int | None]:
    with _idle_guard:
        if _idle:
            return _idle.pop()
    return duckdb.connect(":memory:"), None


def _give_back(conn: duckdb.DuckDBPyConnection, threads: int | None) -> None:
    with _idle_guard:
        if len(_idle) < _IDLE_MAX:
            _idle.append((conn, threads))
            return
    conn.close()


@atexit.register
def _close_all() -> None:
    """Free every in-memory instance before the interpreter tears down DuckDB's bindings."""
    for store in list(_open_stores):
        store.close()
    with _idle_guard:
        idle, _idle[:] = list(_idle), []
    for conn, _ in idle:
        conn.close()


class HistoryStore:
    """The history file of one venue. Holds the file only inside a session.

    Between sessions it keeps an in-memory DuckDB instance and attaches the
    file to it per session (`close()` hands the instance to the next store of
    the process): starting a DuckDB instance costs about 10-18 ms,
    an ATTACH about 1 ms, and DETACH releases DuckDB's own file lock just
    as closing does. If a DETACH ever fails, the instance is closed, so the
    file is never left open after the flock is released.
    """

    _ALIAS = "history"

    def __init__(self, path: str | Path, *, lock_timeout_s: float = 30.0, owner: str | None = None,
                 poll_interval_s: float = 0.005):
        self.path = Path(path)
        self.lock_timeout_s = float(lock_timeout_s)
        self.lock = StoreLock(self.path, owner=owner, poll_interval_s=poll_interval_s)
        self._instance: duckdb.DuckDBPyConnection | None = None
        self._threads: int | None = None
        _open_stores.add(self)

    @classmethod
    def for_node(cls, node, *, owner: str | None = None) -> "HistoryStore":
        """The store of the configured venue (`<data_dir>/<venue>.duckdb`)."""
        return cls(node.db_path, lock_timeout_s=float(node.db_writer.lock_timeout_s), owner=owner)

    def exists(self) -> bool:
        return self.path.exists()

    def close(self) -> None:
        """Drop the in-memory instance (the file is not open outside a session anyway).

        Skipped while another thread is inside a session of this file: closing
        under it would pull the connection away mid-statement.
        """
        if self.lock.busy_in_process():
            return
        if self._instance is not None:
            _give_back(self._instance, self._threads)
            self._instance = None

    def _drop_instance(self) -> None:
        if self._instance is not None:
            self._instance.close()
            self._instance = None

    @contextmanager
    def session(self, timeout_s: float | None = None, *, threads: int | None = None) -> Iterator[StoreSession]:
        """Lock, attach and migrate the file; detach and unlock on exit (also on error).

        `threads` caps DuckDB's worker threads for this session. Writers pass 1:
        a batch upsert gains nothing from a second thread, and on a small
        machine that core belongs to the WebSocket and actor threads.
        """
        timeout = self.lock_timeout_s if timeout_s is None else timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with self.lock.hold(timeout):
            # A process that opened the file without our lock is waited for like a lock holder.
            conn = self.lock.while_foreign(lambda: self._attach(threads), timeout, started)
            try:
                migrate(conn, self.path)
                yield StoreSession(conn, self.path)
            finally:
                self._detach(conn)

    def _attach(self, threads: int | None) -> duckdb.DuckDBPyConnection:
        if self._instance is None:
            self._instance, self._threads = _take_instance()
        conn = self._instance
        wanted = threads or _DEFAULT_THREADS
        if self._threads != wanted:
            conn.execute(f"SET threads = {int(wanted)}")
            self._threads = wanted
        started = time.monotonic()
        try:
            conn.execute(f"ATTACH ? AS {self._ALIAS}", [str(self.path)])
        except duckdb.IOException as exc:
            match = _DUCKDB_LOCK_RE.search(str(exc))
            if match is None and "lock" not in str(exc).lower():
                raise StoreError(f"cannot open history store {self.path}: {exc}") from exc
            holder = (
                f"pid {match['pid']} ({match['prog']}), which opened the file without the node's lock"
                if match
                else "a process that opened the file without the node's lock"
            )
            raise StoreBusy(self.path, holder, time.monotonic() - started) from None
        except duckdb.Error as exc:
            raise StoreError(f"cannot open history store {self.path}: {exc}") from exc
        conn.execute(f"USE {self._ALIAS}")
        return conn

    def _detach(self, conn: duckdb.DuckDBPyConnection) -> None:
        try:
            try:
                conn.execute("ROLLBACK")  # a session that died inside a transaction
            except duckdb.Error:
                pass  # none was open: the normal case
            conn.execute("USE memory")
            conn.execute(f"DETACH {self._ALIAS}")
        except BaseException:
            # Never release the flock while DuckDB may still hold the file.
            self._drop_instance()
            raise

    def write_bars(self, bars: Iterable[ClosedBar], timeout_s: float | None = None) -> WriteResult:
        """One session, one batch."""
        with self.session(timeout_s, threads=1) as s:
            return s.write_bars(bars)
