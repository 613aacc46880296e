"""Risk's durable memory: per UTC day, the day anchor, the peak equity and the daily-loss latch.

It lives in the venue's history file, under the same cross-process lock as
every other session (`HistoryStore.session`), so a restarted node reads
back a halt it tripped before dying. One row per UTC day; a day's row is
replaced whole (one statement), so a reader never sees half an update.

The table is created here (`CREATE TABLE IF NOT EXISTS`) rather than as a
schema migration: it belongs to Risk alone, no bar query touches it, and an
older binary that does not know it simply leaves it alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal

from infra.store.schema import DECIMAL
from infra.store.store import HistoryStore, StoreSession
from messages.types import UTC

_TABLE = f"""CREATE TABLE IF NOT EXISTS risk_day (
    day DATE PRIMARY KEY,
    anchor_balance {DECIMAL} NOT NULL,
    peak_equity {DECIMAL},
    latched BOOLEAN NOT NULL,
    latch_reason VARCHAR,
    latched_at TIMESTAMP,
    seed_source VARCHAR NOT NULL,
    updated_at TIMESTAMP NOT NULL
)"""


@dataclass(frozen=True)
class RiskDay:
    """Risk's state for one UTC day.

    `anchor_balance`: the wallet balance (realised basis) the day started
    from; today's PnL is equity minus this. `seed_source` says where it came
    from ("venue": wallet minus today's closed PnL; "rollover": the balance
    seen at 00:00 UTC).
    """

    day: date
    anchor_balance: Decimal
    peak_equity: Decimal | None
    latched: bool
    latch_reason: str | None
    latched_at: datetime | None
    seed_source: str

    def with_latch(self, reason: str, at: datetime) -> "RiskDay":
        return replace(self, latched=True, latch_reason=reason, latched_at=at)

    def with_peak(self, peak: Decimal) -> "RiskDay":
        return replace(self, peak_equity=peak)


def _naive(t: datetime | None) -> datetime | None:
    return None if t is None else t.astimezone(UTC).replace(tzinfo=None)


class RiskStateStore:
    """Load and save `RiskDay` rows; every call is one short session on the history file."""

    def __init__(self, store: HistoryStore, *, timeout_s: float = 2.0):
        self._store = store
        self._timeout_s = timeout_s

    def _session(self):
        return self._store.session(self._timeout_s, threads=1)

    @staticmethod
    def _ensure(s: StoreSession) -> None:
        s.conn.execute(_TABLE)

    def load(self, day: date) -> RiskDay | None:
        if not self._store.exists():
            return None  # reading must not create the venue's file: nothing was ever stored
        with self._session() as s:
            self._ensure(s)
            rows = s.conn.execute(
                """SELECT day, anchor_balance, peak_equity, latched, latch_reason, latched_at, seed_source
                   FROM risk_day WHERE day = ?""",
                [day],
            ).fetchall()
        if not rows:
            return None
        d, anchor, peak, latched, reason, at, source = rows[0]
        return RiskDay(
            day=d,
            anchor_balance=Decimal(anchor).normalize(),
            peak_equity=None if peak is None else Decimal(peak).normalize(),
            latched=bool(latched),
            latch_reason=reason,
            latched_at=None if at is None else at.replace(tzinfo=UTC),
            seed_source=source,
        )

    def save(self, row: RiskDay, *, now: datetime) -> None:
        """Replace the day's row; returns only once DuckDB has committed it."""
        with self._session() as s:
            self._ensure(s)
            s.conn.execute(
                """INSERT OR REPLACE INTO risk_day
                   (day, anchor_balance, peak_equity, latched, latch_reason, latched_at, seed_source, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                [
                    row.day,
                    row.anchor_balance,
                    row.peak_equity,
                    row.latched,
                    row.latch_reason,
                    _naive(row.latched_at),
                    row.seed_source,
                    _naive(now),
                ],
            )
