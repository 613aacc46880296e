"""The store's error tree. Everything in infra/store raises only these.

    StoreError
    +-- StoreBusy        another process holds the file; names the file and the holder
    +-- SchemaTooNew     the file was written by a newer version of this program
    +-- NestedSession    a thread asked for the file while it already holds it
    +-- StoreUnreadable  the file is not a history this program can read (damaged, not DuckDB)
"""

from __future__ import annotations

from pathlib import Path


class StoreError(Exception):
    """Base of every error raised by the history store."""


class StoreBusy(StoreError):
    """The database file is held by someone else and did not free up in time.

    The message always says which file, who holds it (as far as that can be
    known) and how long we waited: never a bare "database is locked".
    """

    def __init__(self, path: Path, holder: str, waited_s: float):
        self.path = path
        self.holder = holder
        self.waited_s = waited_s
        super().__init__(
            f"history store {path} is busy: held by {holder}; waited {waited_s:.1f} s. "
            "It frees up as soon as that process finishes its write or exits "
            "(a killed process releases it at once)."
        )


class SchemaTooNew(StoreError):
    """The file's schema version is newer than this program knows."""

    def __init__(self, path: Path, found: int, known: int):
        self.path = path
        self.found = found
        self.known = known
        super().__init__(
            f"history store {path} has schema version {found}, this program knows up to {known}: "
            "run the newer program, or point data_dir elsewhere"
        )


class NestedSession(StoreError):
    """A thread that already holds the store asked for it again (it would wait on itself)."""


class StoreUnreadable(StoreError):
    """The file exists but is not a readable history: damaged, or not a DuckDB file at all.

    The message names the file and what to do; nothing here ever writes to it.
    """

    def __init__(self, path: Path, reason: str, catch_up_days: int | None = None):
        self.path = path
        self.reason = reason
        days = f"the last {catch_up_days} day(s)" if catch_up_days else "the last `db_writer.catch_up_days`"
        super().__init__(
            f"history store {path} is not a readable history file ({reason}). It was left exactly as it is. "
            f"Move it aside (mv {path} {path}.broken): the next start creates a new file and refetches {days}, "
            "and `python main.py sync --days N` fetches the rest."
        )
