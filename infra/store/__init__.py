"""OHLCV history in DuckDB: one file per venue, bars keyed by (symbol, interval, open_time).

Public surface:
    HistoryStore, StoreSession, SeriesInfo, WriteResult   the file and its sessions
    BarRange                                              half-open ranges of bar open times
    StoreError, StoreBusy, SchemaTooNew, NestedSession,
    StoreUnreadable                                       what can go wrong
"""

from infra.store.errors import NestedSession, SchemaTooNew, StoreBusy, StoreError, StoreUnreadable
from infra.store.ranges import BarRange
from infra.store.store import HistoryStore, SeriesInfo, StoreSession, WriteResult

__all__ = [
    "BarRange",
    "HistoryStore",
    "NestedSession",
    "SchemaTooNew",
    "SeriesInfo",
    "StoreBusy",
    "StoreError",
    "StoreUnreadable",
    "StoreSession",
    "WriteResult",
]
