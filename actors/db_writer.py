"""DbWriter: the only writer of the history file; its mailbox decouples bar
persistence from WebSocket callbacks (DATA-014).

Callbacks `tell` closed bars and return at once; nothing they do waits for
DuckDB or for the file lock. The DbWriter gathers bars and writes them as
one columnar batch:

* size: when `flush_max_bars` are held it tells itself a `Flush`. The flush
  runs after every message already queued, so under load a batch holds the
  whole backlog and the per-write cost is shared by more bars;
* time: the first bar into an empty buffer arms a timer that tells a
  `Flush` after `flush_interval_ms` (Pykka has no timers; a
  timer that tells, `actors.timers.tell_later`, is the whole mechanism);
* on request: `Flush` from anyone (an `ask` returns a `FlushReport`).

`GetWriterStats` answers what `status` and the metrics show: bars held,
messages still queued, the last successful flush, and since when flushes
have been failing (and why), if they are.

A flush that cannot get the file within `lock_wait_ms` (another process is
writing) or fails in any other way keeps every bar and retries, backing off
up to `retry_max_ms`; bars are dropped only if they cannot be stored at all
(a decimal too long for the column), and each such bar is logged. A handler
that raised would kill the actor and drop its queued bars, so nothing here
raises. On stop the mailbox is drained (Pykka delivers everything told
before the stop) and the buffer written, trying for up to
`drain_timeout_s`; whatever still cannot be written is logged with its
ranges (`db.drain_failed`) so `python main.py heal` can refetch it.

Given a kline source (the gateway's backfill lane), the DbWriter tells
itself `CatchUp` at start: every configured series is synced from its last
stored bar to now (`catch_up_days` back if nothing is stored), so a crash
or a stopped node leaves no hole. The catch-up runs on its own thread, one
series after the other, so the actor keeps answering heartbeats and
writing live bars while it waits on the venue; the store's lock keeps the
two writers' sessions apart. A stop is served between two series. Once a
series is caught up and its first streamed bar has arrived, the bars that
closed between the two (the socket subscribed a moment after the catch-up
read the clock) are fetched too (`db.seam_synced`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable


import pykka

from actors.base import NodeActor, Role
from actors.timers import tell_later
from infra.store import HistoryStore, StoreBusy
from infra.store.sync import HistorySync, KlineSource, SyncFailed, venue_clock
from messages.commands import CatchUp, Flush
from messages.queries import GetWriterStats, WriterStats
from messages.market import BarSource, ClosedBar
from messages.types import Message, align_ms, ms_to_utc, now_utc

_BarKey = tuple[str, str, datetime]


class SeriesCaughtUp(Message):
    """From the catch-up thread: the series holds every bar closed by `until_ms` (venue clock)."""

    symbol: str
    interval: str
    until_ms: int


@dataclass(frozen=True)
class FlushReport:
    """What a `Flush` ask answers: bars written now, bars still held, and why not, if not."""

    written: int
    pending: int
    error: str | None = None


class BarBuffer:
    """Closed bars waiting to be written; a later copy of a bar replaces the earlier one."""

    def __init__(self) -> None:
        self._bars: dict[_BarKey, ClosedBar] = {}

    def add(self, bar: ClosedBar) -> int:
        # Keyed by the datetime itself (hashed in C): `open_ms` would be a Python call per bar.
        self._bars[(bar.symbol, bar.interval, bar.open_time)] = bar
        return len(self._bars)

    def __len__(self) -> int:
        return len(self._bars)

    def snapshot(self) -> list[ClosedBar]:
        return list(self._bars.values())

    def clear(self) -> None:
        self._bars = {}

    def ranges(self) -> dict[str, list[str]]:
        """Per series, the first and last open time held: what a heal would have to refetch."""
        spans: dict[str, list[datetime]] = {}
        for symbol, interval, open_time in self._bars:
            span = spans.setdefault(f"{symbol}/{interval}", [open_time, open_time])
            span[0], span[1] = min(span[0], open_time), max(span[1], open_time)
        return {k: [a.isoformat(), b.isoformat()] for k, (a, b) in spans.items()}


class DbWriter(NodeActor):
    role = Role.DB_WRITER

    def __init__(self, ctx, store: HistoryStore | None = None, source: KlineSource | None = None):
        super().__init__(ctx)
        # The node's gateway (backfill lane) unless a test passes its own source.
        self._source = source if source is not None else ctx.gateway
        self._catch_up_days = ctx.config.node.db_writer.catch_up_days
        self._in_flight = ctx.config.node.exchange.kline_requests_in_flight
        self._catch_up_thread: threading.Thread | None = None
        self._catch_up_stop = threading.Event()
        # The seam between the catch-up and the stream, per series: where the catch-up's bars end
        # (venue clock) and where the stream's begin (its first closed bar this actor got).
        self._caught_up: dict[tuple[str, str], int] = {}
        self._first_streamed: dict[tuple[str, str], int] = {}
        self._seams_checked: set[tuple[str, str]] = set()
        self._seam_threads: list[threading.Thread] = []
        cfg = ctx.config.node.db_writer
        self._max_bars = cfg.flush_max_bars
        self._interval_s = cfg.flush_interval_ms / 1000
        self._lock_wait_s = cfg.lock_wait_ms / 1000
        self._retry_max_s = cfg.retry_max_ms / 1000
        self._drain_timeout_s = float(cfg.drain_timeout_s)
        self._store = store or HistoryStore.for_node(ctx.config.node, owner=f"node db_writer (generation {ctx.generation})")
        self._buffer = BarBuffer()
        self._size_flush_queued = False
        self._timer: threading.Timer | None = None
        self._timer_guard = threading.Lock()
        self._failures = 0  # consecutive failed flushes
        self._failing_since: str | None = None  # ISO UTC of the first failure of the current run
        self._last_error: str | None = None
        self._last_flush_at: str | None = None
        self._last_flush_bars = 0
        self._stopping = False

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {ClosedBar: self._on_bar, Flush: self._on_flush, CatchUp: self._on_catch_up,
                GetWriterStats: self._on_stats, SeriesCaughtUp: self._on_caught_up}

    # --- messages ---------------------------------------------------------

    def _on_bar(self, bar: ClosedBar) -> None:
        if bar.source is BarSource.WS:
            key = (bar.symbol, bar.interval)
            if key not in self._first_streamed:
                self._first_streamed[key] = bar.open_ms
                self._check_seam(key)
        held = self._buffer.add(bar)
        if held == 1 and self._failures == 0:
            self._arm(self._interval_s, "interval")
        if held >= self._max_bars and not self._size_flush_queued and self._failures == 0:
            self._size_flush_queued = True
            self.actor_ref.tell(Flush(reason="size"))

    def _on_flush(self, msg: Flush) -> FlushReport:
        if msg.reason == "size":
            self._size_flush_queued = False
        if msg.reason in ("interval", "retry"):
            with self._timer_guard:
                self._timer = None
        return self._flush(msg.reason, self._lock_wait_s)

    def _on_stats(self, _msg: GetWriterStats) -> WriterStats:
        return WriterStats(
            pending_bars=len(self._buffer),
            # Messages told but not yet handled (bars, flushes, catch-up steps): a backlog shows here first.
            mailbox=self.actor_inbox.qsize(),
            last_flush_at=self._last_flush_at,
            last_flush_bars=self._last_flush_bars,
            failing_since=self._failing_since,
            last_error=self._last_error,
        )

    # --- flushing ---------------------------------------------------------

    def _flush(self, reason: str, lock_wait_s: float) -> FlushReport:
        if not len(self._buffer):
            return FlushReport(0, 0)
        bars = self._buffer.snapshot()
        started = time.perf_counter()
        try:
            with self._store.session(timeout_s=lock_wait_s, threads=1) as session:
                locked_ms = (time.perf_counter() - started) * 1000
                result = session.write_bars(bars)
        except Exception as exc:  # anything: the bars stay, the actor lives
            return self._flush_failed(exc, reason)
        self._buffer.clear()
        self._cancel_timer()
        retried = self._failures
        self._failures = 0
        self._failing_since = None
        self._last_error = None
        self._last_flush_at = now_utc().isoformat()
        self._last_flush_bars = result.written
        for bar in result.rejected:
            self._log.error("db.bar_rejected", symbol=bar.symbol, interval=bar.interval,
                            open_time=bar.open_time.isoformat(), reason="a value does not fit DECIMAL(38,18)")
        self._log.info(
            "db.flush",
            bars=result.written,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
            lock_wait_ms=round(locked_ms, 2),
            reason=reason,
            failed_attempts=retried,
        )
        return FlushReport(result.written, 0)

    def _flush_failed(self, exc: Exception, reason: str) -> FlushReport:
        self._failures += 1
        if self._failing_since is None:
            self._failing_since = now_utc().isoformat()
        self._last_error = f"{type(exc).__name__}: {exc}"
        retry_in = min(self._retry_max_s, self._interval_s * 2 ** (self._failures - 1))
        busy = isinstance(exc, StoreBusy)
        if not busy:  # a broken file, not a wait: said once as an error, then retried quietly
            if self._failures == 1:
                self._log.error("db.write_failed", bars=len(self._buffer), error=repr(exc), reason=reason)
            if not self._stopping:
                self._arm(retry_in, "retry", replace=True)
            return FlushReport(0, len(self._buffer), str(exc))
        self._log.warning(
            "db.flush_failed",
            bars=len(self._buffer),
            attempt=self._failures,
            reason=reason,
            busy=busy,
            error=str(exc) if busy else repr(exc),
            retry_in_ms=None if self._stopping else round(retry_in * 1000),
        )
        if not self._stopping:
            self._arm(retry_in, "retry", replace=True)
        return FlushReport(0, len(self._buffer), str(exc))

    # --- timer ------------------------------------------------------------

    def _arm(self, delay_s: float, reason: str, *, replace: bool = False) -> None:
        with self._timer_guard:
            if self._timer is not None:
                if not replace:
                    return
                self._timer.cancel()
            self._timer = tell_later(self.actor_ref, Flush(reason=reason), delay_s)

    def _cancel_timer(self) -> None:
        with self._timer_guard:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    # --- catching up -------------------------------------------------------

    def _on_catch_up(self, msg: CatchUp) -> None:
        """Start the catch-up of `msg.pending` (every configured series if None) on its own thread.

        Not on this actor's thread: one series after a long downtime is many pages, and a rate
        limit's reset hint alone may be 120 s. Here it would answer no heartbeat (the Supervisor
        replaces a writer that is merely waiting on the venue, and the replacement starts a
        second catch-up over the first) and write no live bar until it is done. The store's lock
        keeps the catch-up's sessions and this actor's flushes apart, as with a `sync` process.
        """
        if self._source is None:
            return
        if self._catch_up_thread is not None and self._catch_up_thread.is_alive():
            self._log.info("db.catch_up_running", reason=msg.reason)
            return
        self._flush("catch_up", self._lock_wait_s)  # what arrived first goes in first
        pending = msg.pending
        if pending is None:
            pending = tuple((s, i) for s, cfg in self._ctx.config.node.symbols.items() for i in cfg.intervals)
        self._catch_up_thread = threading.Thread(
            target=self._catch_up, args=(msg.reason, pending, dict(msg.done)),
            name=f"db-catch-up-{self._ctx.generation}", daemon=True)
        self._catch_up_thread.start()

    def _catch_up(self, reason: str, pending: tuple[tuple[str, str], ...], outcome: dict[str, str]) -> None:
        """The catch-up thread: each series in turn (HistorySync.catch_up), one `db.catch_up` line
        at the end. A stop is served between two series; nothing here raises."""
        try:
            venue_now = venue_clock(self._source)  # measured again for every round
        except Exception as exc:  # unknown venue time: no bar can be judged closed, fetch nothing
            unknown = {**outcome, **{f"{s}/{i}": f"failed: the venue's clock is unknown: {exc!r}" for s, i in pending}}
            self._log.warning("db.catch_up", reason=reason, series=unknown)
            return
        for n, (symbol, interval) in enumerate(pending):
            if self._catch_up_stop.is_set():
                skipped = {f"{s}/{i}": "skipped: the node stopped first" for s, i in pending[n:]}
                self._log.warning("db.catch_up", reason=reason, series={**outcome, **skipped}, stopped=True)
                return
            until_ms = venue_now()  # the series' sync stores at least every bar closed by this
            result = outcome[f"{symbol}/{interval}"] = self._catch_up_series(symbol, interval, venue_now)
            if result.endswith(" bars"):
                try:
                    self.actor_ref.tell(SeriesCaughtUp(symbol=symbol, interval=interval, until_ms=until_ms))
                except pykka.ActorDeadError:
                    pass
        failed = {k: v for k, v in outcome.items() if v.startswith("failed")}
        (self._log.warning if failed else self._log.info)("db.catch_up", reason=reason, series=outcome)

    def _catch_up_series(self, symbol: str, interval: str, venue_now: Callable[[], int]) -> str:
        try:
            if self._catch_up_days == 0:
                with self._store.session(timeout_s=self._lock_wait_s) as s:
                    info = s.series_info(symbol, interval)
                if info is None or info.last_open is None:
                    return "skipped"
            lookback = now_utc() - timedelta(days=self._catch_up_days)
            report = HistorySync(self._store, self._source, now_ms=venue_now,
                                 in_flight=self._in_flight).catch_up(
                symbol, interval, lookback_start=lookback)
            return f"{report.bars_stored} bars"
        except SyncFailed as exc:
            return f"failed: {exc.report.error}"
        except Exception as exc:  # the thread must end with a log line, never a traceback
            return f"failed: {exc!r}"

    # --- the seam between catch-up and stream ----------------------------------

    def _on_caught_up(self, msg: SeriesCaughtUp) -> None:
        key = (msg.symbol, msg.interval)
        self._caught_up[key] = msg.until_ms
        self._check_seam(key)

    def _check_seam(self, key: tuple[str, str]) -> None:
        """Once both ends of a series' seam are known: fetch the bars between them, if any.

        The catch-up stores the bars closed by the venue's clock when it ran; the stream
        delivers closed bars from its first confirm on. A bar that closed in between (the
        socket subscribed a moment later, or was still connecting) reached neither."""
        until_ms, first = self._caught_up.get(key), self._first_streamed.get(key)
        if until_ms is None or first is None or key in self._seams_checked:
            return
        self._seams_checked.add(key)
        symbol, interval = key
        start = align_ms(interval, until_ms)  # the first bar still open when the catch-up read the clock
        if first <= start or self._source is None or self._stopping:
            return
        thread = threading.Thread(target=self._sync_seam, args=(symbol, interval, start, first),
                                  name=f"db-seam-{symbol}-{interval}", daemon=True)
        self._seam_threads = [t for t in self._seam_threads if t.is_alive()] + [thread]
        thread.start()

    def _sync_seam(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> None:
        """On its own thread (a venue request): only what the file lacks in [start, end) is fetched."""
        try:
            report = HistorySync(self._store, self._source, now_ms=venue_clock(self._source),
                                 in_flight=self._in_flight).sync(symbol, interval, ms_to_utc(start_ms), ms_to_utc(end_ms))
        except SyncFailed as exc:
            self._log.error("db.seam_sync_failed", symbol=symbol, interval=interval, from_ms=start_ms, to_ms=end_ms,
                            error=exc.report.error)
        except Exception as exc:  # noqa: BLE001 - the thread ends with a log line, never a traceback
            self._log.error("db.seam_sync_failed", symbol=symbol, interval=interval, from_ms=start_ms, to_ms=end_ms,
                            error=repr(exc))
        else:
            self._log.info("db.seam_synced", symbol=symbol, interval=interval, from_ms=start_ms, to_ms=end_ms,
                           bars=report.bars_stored)

    def _stop_catch_up(self, wait_s: float) -> None:
        """Let the catch-up finish the series it is on (up to `wait_s`) and start no other."""
        self._catch_up_stop.set()
        deadline = time.monotonic() + wait_s
        for thread in (self._catch_up_thread, *self._seam_threads):
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    self._log.error("db.catch_up_abandoned", thread=thread.name, waited_s=wait_s)

    # --- lifecycle --------------------------------------------------------

    def on_start(self) -> None:
        super().on_start()
        if self._source is not None:
            self.actor_ref.tell(CatchUp(reason="start"))

    def on_stop(self) -> None:
        deadline = time.monotonic() + self._drain_timeout_s
        # A quarter of the stop budget for the catch-up's current series: the held live bars
        # matter more (the next start's catch-up redoes an unfinished series; a unit cut short
        # is rolled back, never half-written).
        self._stop_catch_up(self._drain_timeout_s / 4)
        self._stopping = True
        self._cancel_timer()
        self._drain(deadline)
        self._store.close()
        super().on_stop()

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self._catch_up_stop.set()
        self._stopping = True
        self._cancel_timer()
        if len(self._buffer):
            self._log.error("db.drain_failed", bars=len(self._buffer), ranges=self._buffer.ranges(),
                            error=repr(exception_value))
        super().on_failure(exception_type, exception_value, traceback)

    def _drain(self, deadline: float) -> None:
        while len(self._buffer):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._log.error("db.drain_failed", bars=len(self._buffer), ranges=self._buffer.ranges(),
                                waited_s=self._drain_timeout_s)
                return
            report = self._flush("stop", remaining)
            if report.error is not None and deadline - time.monotonic() > 0:
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))  # the error was not the lock wait
