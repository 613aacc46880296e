"""History sync: make the store hold every bar the venue has in a range (DATA-006, DATA-007).

What gets fetched is whatever the store lacks inside the requested range:
the ranges before the first and after the last stored bar *and* every
internal gap, all from the same SQL gap scan, minus the ranges the venue is
known to have no bars for (the venue-hole ledger). So a second run over the
same range fetches nothing, and a crash mid-sync is resumed by the next run.

Each missing range is paged newest first, as Bybit serves it, in windows
of at most `page_limit` bars (what the venue returns when a window holds
more than `limit` bars is undocumented, so a window never does). A helper
thread fetches the pages ahead, with `in_flight` (2) requests on the wire
at once, and hands them over in order, while the calling thread stores
them, whole pages per session up to `unit_bars` (10,000) bars: the
session's fixed cost is paid per unit, not per page, and the running
node's DbWriter still gets the file between units (no process keeps it
open between units), so a crash loses at most one unit, which the next
run refetches. At most one unit is fetched ahead of the one being stored,
so memory stays bounded whatever the range. Bars still open at `now` are
dropped. Bars a window should hold but
the venue did not return are venue holes once they are older than
`hole_grace_ms` (the venue may publish a just-closed bar a moment late):
they are recorded, in the session that stores their window, reported, and
not asked for again. After an empty window, the older windows already on
the wire answer whether the range goes on; if they are empty too, one
probe asks whether the rest of the range holds anything at all, so the
years before a symbol's listing cost a few requests, not thousands.

A page goes from the venue's rows straight into the store's columns
(`table_from_rows`: Arrow parses and checks the whole page at once); a page
that does not pass as a whole is parsed row by row through ClosedBar,
which names the bad row.

Transient errors (timeouts, 5xx, dropped connections, rate limits) are
retried per request with tenacity: exponential backoff with jitter,
bounded, one `sync.retry` line per retry, never shorter than the venue's
reset time. A ban or a rejection is not retried. A sync that cannot finish
raises `SyncFailed` carrying the report of what it did; it never returns a
short result as success.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator, Protocol, runtime_checkable

import pyarrow as pa
import pyarrow.compute as pc

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential

from infra.bybit.errors import ExchangeError, TransientError
from infra.logging import get_logger
from infra.store.batch import Batch, build_batch, table_from_rows
from infra.store.errors import StoreError
from infra.store.ranges import BarRange, missing_opens, windows_newest_first
from infra.store.store import HistoryStore, StoreSession
from messages.market import ClosedBar
from messages.types import align_ms, ms_to_utc, next_open_ms, utc_to_ms

PAGE_LIMIT = 1000
# Bars per store session. A session costs ~8 ms of lock, attach, migration check and
# detach (whose checkpoint is most of it) whatever it writes, so a page per session
# spent more on sessions than on bars; ten pages make it small. It is also how long
# another process (the node's DbWriter) may wait for the file: ~40 ms here.
UNIT_BARS = 10_000
# Page requests on the wire at once. Against the venue a page is a round trip of tens to hundreds
# of ms, nearly all of it waiting: two in flight halve that wait, and the rate limiter (the
# backfill lane, below every trading lane) still decides when each may go.
IN_FLIGHT = 2
_TS = pa.timestamp("ms")
_COUNTS = threading.Lock()  # a report's counters are bumped from the request threads


class KlineSource(Protocol):
    """One page of GET /v5/market/kline, exactly as the venue answered (the gateway's `fetch_klines`)."""

    def fetch_klines(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, limit: int = PAGE_LIMIT
    ) -> list[ClosedBar]: ...


class VenueClock(Protocol):
    def server_time(self) -> Any:
        """The venue's clock: an answer with `skew_ms` (venue minus ours), as the gateway's `server_time`."""
        ...


def venue_clock(venue: VenueClock) -> Callable[[], int]:
    """"Now" in ms on the venue's clock: ours, corrected by the skew it reports (one request).

    Whether a bar has closed is the venue's call: with a local clock running
    ahead, the bar still forming would pass for closed and be stored with
    partial values, over the closed bar the stream may already have stored.
    """
    skew_ms = int(venue.server_time().skew_ms)
    return lambda: int(time.time() * 1000) + skew_ms


@dataclass(frozen=True)
class _Page:
    """One page in the store's columns, plus the open times of bars the venue sent but the
    column cannot hold (set aside, not stored): they are not venue holes, the venue has them."""

    table: pa.Table
    unstorable: tuple[int, ...] = ()

    @property
    def rows(self) -> int:
        return self.table.num_rows


@dataclass(frozen=True)
class _Item:
    """One fetched page on its way to the store: its bars, the venue holes its window proves,
    and the progress count once it is stored."""

    page: _Page
    holes: tuple[BarRange, ...]
    settled: int


@dataclass(frozen=True)
class _Failed:
    """The fetcher stopped on this error; everything queued before it is to be stored first."""

    exc: BaseException


_END = object()  # the fetcher has handed over every page


class _Stopped(Exception):
    """The fetcher was told to stop (the storing side failed or was interrupted)."""


class _Ahead:
    """The pages of `windows`, handed out in order, with up to `depth` requests on the wire at
    once (sent by `pool`'s threads).

    A request once sent is always waited for, never abandoned: what a sync asks the venue is
    then fixed by the windows and the answers, not by which thread got a core first. A failed
    request raises where its page is handed out, after every page before it.
    """

    def __init__(self, windows: Iterable[BarRange], fetch: Callable[[BarRange], _Page],
                 pool: ThreadPoolExecutor, depth: int):
        self._windows = iter(windows)
        self._fetch = fetch
        self._pool = pool
        self._depth = depth
        self._asked: deque[tuple[BarRange, Future[_Page]]] = deque()

    def __iter__(self) -> Iterator[tuple[BarRange, _Page]]:
        return self

    def __next__(self) -> tuple[BarRange, _Page]:
        while len(self._asked) < self._depth and (window := next(self._windows, None)) is not None:
            self._asked.append((window, self._pool.submit(self._fetch, window)))
        if not self._asked:
            raise StopIteration
        window, future = self._asked.popleft()
        return window, future.result()

    def on_the_wire(self) -> list[tuple[BarRange, _Page]]:
        """The windows already asked for and their pages (waited for), still to be handed out in
        turn, up to the first that failed (it raises when its turn comes); nothing new is asked
        for until the next page is taken."""
        answered: list[tuple[BarRange, _Page]] = []
        for window, future in self._asked:
            if future.exception() is not None:
                break
            answered.append((window, future.result()))
        return answered


@runtime_checkable
class KlineRowSource(Protocol):
    """A source that can hand over a page's raw rows (the gateway): the sync then builds the
    page's columns in one go instead of one ClosedBar per row."""

    def fetch_kline_rows(self, symbol: str, interval: str, start_ms: int, end_ms: int,
                         limit: int = PAGE_LIMIT) -> list: ...

    def parse_kline_rows(self, symbol: str, interval: str, rows: list) -> list[ClosedBar]: ...


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6  # per request, the first one included
    initial_s: float = 0.5
    max_s: float = 30.0  # cap of one backoff step
    max_hint_s: float = 120.0  # the venue's reset time is honoured up to this


@dataclass
class SyncReport:
    symbol: str
    interval: str
    wanted: BarRange | None
    planned_bars: int = 0  # missing and fillable when the sync began
    requests: int = 0
    pages_stored: int = 0
    bars_stored: int = 0
    retries: int = 0
    venue_holes: list[BarRange] = field(default_factory=list)  # found by this run
    unpublished: list[BarRange] = field(default_factory=list)  # missing, but too recent to call a hole
    remaining: list[BarRange] = field(default_factory=list)  # still fillable at the end (only on failure)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.remaining


class SyncFailed(StoreError):
    """The sync could not finish; `report` says what it did before it stopped."""

    def __init__(self, report: SyncReport):
        self.report = report
        super().__init__(
            f"sync {report.symbol} {report.interval} failed after {report.pages_stored} page(s) "
            f"({report.bars_stored} bars stored): {report.error}"
        )


@dataclass(frozen=True)
class Progress:
    symbol: str
    interval: str
    done_bars: int
    total_bars: int


def wanted_range(interval: str, start_ms: int, end_ms: int, now_ms: int) -> BarRange | None:
    """Bars overlapping [start, end) that have closed by `now`; None if there are none."""
    first = align_ms(interval, start_ms)
    stop = align_ms(interval, min(end_ms, now_ms))  # bars opening before this have closed
    return BarRange(first, stop) if stop > first else None


class HistorySync:
    def __init__(
        self,
        store: HistoryStore,
        source: KlineSource,
        *,
        now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        retry: RetryPolicy = RetryPolicy(),
        page_limit: int = PAGE_LIMIT,
        unit_bars: int = UNIT_BARS,
        hole_grace_ms: int = 120_000,
        progress: Callable[[Progress], None] | None = None,
        sleep: Callable[[float], None] | None = None,
        in_flight: int = IN_FLIGHT,
    ):
        if not 1 <= page_limit <= PAGE_LIMIT:
            raise ValueError(f"page_limit must be within 1..{PAGE_LIMIT}")
        if unit_bars < 1:
            raise ValueError("unit_bars must be at least 1")
        if in_flight < 1:
            raise ValueError("in_flight must be at least 1")
        self._in_flight = in_flight
        self._store = store
        self._source = source
        self._now_ms = now_ms
        self._retry = retry
        self._page_limit = page_limit
        self._unit_bars = unit_bars
        self._hole_grace_ms = hole_grace_ms
        self._progress = progress
        self._sleep = sleep
        self._log = get_logger("infra.store.sync")

    def sync(self, symbol: str, interval: str, start: datetime, end: datetime) -> SyncReport:
        """Fill every fillable gap of [start, end); raise SyncFailed if that cannot be done."""
        now = self._now_ms()
        wanted = wanted_range(interval, utc_to_ms(start), utc_to_ms(end), now)
        report = SyncReport(symbol, interval, wanted)
        if wanted is None:
            return report
        if self._store.exists():
            with self._store.session() as s:
                plan = s.fillable_gaps(symbol, interval, wanted)
        else:
            # A file not created yet holds no bar and knows no venue hole: all of it is missing.
            # The first unit's session creates it (while the next pages are on the wire), instead
            # of a session up front that only learns that. If another process creates it meanwhile,
            # the plan is merely too wide: what is already stored is upserted again, identical.
            plan = [wanted]
        report.planned_bars = sum(r.bars(interval) for r in plan)
        self._log.info("sync.started", symbol=symbol, interval=interval, start=wanted.describe(),
                 missing_ranges=len(plan), missing_bars=report.planned_bars)
        left: list[BarRange] | None = None
        try:
            if plan:
                left = self._run(symbol, interval, wanted, plan, now, report)
        except (ExchangeError, StoreError) as exc:
            report.error = f"{type(exc).__name__}: {exc}"
        if left is None:  # the last unit's session did not check (nothing to fetch, or a failure)
            try:
                with self._store.session() as s:
                    left = self._finish(s, symbol, interval, wanted, report)
            except StoreError as exc:  # e.g. the file stayed busy: what is left is unknown, say so
                report.error = report.error or f"{type(exc).__name__}: {exc}"
                left = plan
        recent = [r for r in left if r.end_ms > now - self._hole_grace_ms]
        report.unpublished = recent
        report.remaining = [r for r in left if r not in recent] if report.error is None else left
        if report.remaining and report.error is None:
            report.error = f"{sum(r.bars(interval) for r in report.remaining)} bars still missing after the sync"
        fields = dict(symbol=symbol, interval=interval, requests=report.requests, pages=report.pages_stored,
                      bars=report.bars_stored, retries=report.retries,
                      venue_holes=[h.describe() for h in report.venue_holes] or None)
        if not report.ok:
            self._log.error("sync.failed", error=report.error, remaining=[r.describe() for r in report.remaining], **fields)
            raise SyncFailed(report)
        self._log.info("sync.done", unpublished=[r.describe() for r in report.unpublished] or None, **fields)
        return report

    @staticmethod
    def _finish(s: StoreSession, symbol: str, interval: str, wanted: BarRange, report: SyncReport) -> list[BarRange]:
        """What is still missing, checked in the file after the last write; the series is marked
        synced only if nothing failed."""
        left = s.fillable_gaps(symbol, interval, wanted)
        if report.error is None:
            s.mark_synced(symbol, interval)
        return left

    def catch_up(self, symbol: str, interval: str, lookback_start: datetime) -> SyncReport:
        """What a restart must refetch: every hole since `lookback_start`, and the whole tail
        if the last stored bar is older than that.

        The recent window is always re-checked rather than trusting the series'
        recorded last bar: a crash loses the newest bars, and the check costs
        one gap query, since only missing ranges are fetched.
        """
        with self._store.session() as s:
            info = s.series_info(symbol, interval)
        start = lookback_start
        if info is not None and info.last_open is not None:
            start = min(info.last_open, lookback_start)
        return self.sync(symbol, interval, start, ms_to_utc(self._now_ms()))

    # --- the pipeline: a fetcher thread ahead, the calling thread storing units -----

    def _run(self, symbol: str, interval: str, wanted: BarRange, plan: list[BarRange], now: int,
             report: SyncReport) -> list[BarRange]:
        """Fetch every window of `plan` (newest range first) on a helper thread and store them here,
        in order, a unit of whole pages per session.

        The fetcher runs ahead through a bounded queue (one unit's worth of
        pages), so the venue's answer time and the store's session overlap
        instead of adding up (the socket wait and DuckDB's work release the
        interpreter lock), and memory holds at most two units whatever the
        range. The fetcher's error (after retries) arrives in the queue
        behind the pages fetched before it: those are stored first, then it
        is raised here, exactly where a sequential loop would have raised it.
        A store error here stops the fetcher before its next request. The
        last unit's session also checks what is still missing and marks the
        series synced (`_finish`): one session less per sync.
        """
        pages: queue.Queue = queue.Queue(maxsize=max(1, -(-self._unit_bars // self._page_limit)))
        stop = threading.Event()

        def put(item: object) -> bool:
            while not stop.is_set():
                try:
                    pages.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def fetch_all() -> None:
            pool = ThreadPoolExecutor(self._in_flight, thread_name_prefix=f"sync-fetch-{symbol}-{interval}-request")
            try:
                done = 0
                for rng in reversed(plan):  # newest range first, like the pages inside it
                    items = self._items(symbol, interval, rng, now, report, done, stop, pool)
                    while not stop.is_set():  # checked before each request, not only after
                        item = next(items, None)
                        if item is None or not put(item):
                            break
                    done += rng.bars(interval)
                end: object = _END
            except BaseException as exc:  # noqa: BLE001 - handed to the storing thread, which raises it
                end = _Failed(exc)
            # Requests not sent yet are dropped. The end is handed over before waiting for the one
            # still being sent: that may be in a rate limit's backoff, which only the stop that
            # follows the storing side's raise ends at once. No thread of the sync outlives it.
            pool.shutdown(wait=False, cancel_futures=True)
            put(end)
            pool.shutdown(wait=True)

        fetcher = threading.Thread(target=fetch_all, name=f"sync-fetch-{symbol}-{interval}", daemon=True)
        fetcher.start()
        try:
            while True:
                unit: list[_Item] = []
                bars = 0
                # A unit is whole pages, up to `unit_bars`, or what is left at the end.
                while bars < self._unit_bars:
                    got = pages.get()
                    if isinstance(got, _Failed):
                        self._store_unit(symbol, interval, unit, report)
                        raise got.exc
                    if got is _END:
                        return self._store_unit(symbol, interval, unit, report, finish=wanted)
                    unit.append(got)
                    bars += got.page.rows
                self._store_unit(symbol, interval, unit, report)
        finally:
            stop.set()
            fetcher.join()

    def _items(self, symbol: str, interval: str, rng: BarRange, now: int, report: SyncReport,
               done: int, stop: threading.Event | None, pool: ThreadPoolExecutor) -> Iterator[_Item]:
        """One missing range, newest window first, as the pages to store (asked for ahead, in order)."""
        settled = done
        probed = False
        pages = _Ahead(windows_newest_first(interval, rng, self._page_limit),
                       lambda w: self._page(symbol, interval, w, now, report, stop), pool, self._in_flight)
        for window, page in pages:
            if page.rows == 0 and not probed and window.start_ms > rng.start_ms:
                # After an empty page: does the range go on? The older windows already asked for say
                # so first; only if they are empty too, one probe asks about the rest of it.
                asked = pages.on_the_wire()
                if not any(p.rows for _, p in asked):
                    probed = True
                    oldest = asked[-1][0] if asked else window
                    found = None
                    if oldest.start_ms > rng.start_ms:
                        found = self._page(symbol, interval, BarRange(rng.start_ms, oldest.start_ms), now, report, stop)
                    if found is None or not found.rows:
                        # Nothing at all further back (before the listing, say): one hole, no more requests.
                        everything = BarRange(rng.start_ms, window.end_ms)
                        yield _Item(page, self._holes(interval, page, everything, now), done + rng.bars(interval))
                        return
                    yield _Item(found, (), settled)  # stored, but no window to judge holes by
            settled += window.bars(interval)
            yield _Item(page, self._holes(interval, page, window, now), settled)

    def _page(self, symbol: str, interval: str, window: BarRange, now: int, report: SyncReport,
              stop: threading.Event | None = None) -> _Page:
        """Closed bars of one window (fetched with retries), as one table in the store's columns."""
        last_open = window.last_open_ms(interval)
        page = self._fetch(symbol, interval, window.start_ms, last_open, report, stop)
        # A bar has closed by `now` if it opened before the bar that holds `now` (bars are aligned).
        stop_ms = min(window.end_ms, align_ms(interval, now))
        first = ms_to_utc(window.start_ms).replace(tzinfo=None)
        before = ms_to_utc(stop_ms).replace(tzinfo=None)
        table = page.table
        times = table["open_time"]
        span = pc.min_max(times)
        # Filtering copies every column: only when some bar is outside (a venue answers the window).
        if table.num_rows and (span["min"].as_py() < first or span["max"].as_py() >= before):
            table = table.filter(pc.and_(pc.greater_equal(times, pa.scalar(first, _TS)),
                                         pc.less(times, pa.scalar(before, _TS))))
        return _Page(table, tuple(t for t in page.unstorable if window.start_ms <= t < stop_ms))

    def _holes(self, interval: str, page: _Page, window: BarRange, now: int) -> tuple[BarRange, ...]:
        """The slots of `window` the venue did not return, once they are old enough to call holes."""
        bars = page.table
        # A full window (every slot once; `_page` kept only bars inside it) has no hole to look for.
        if pc.count_distinct(bars["open_time"]).as_py() == window.bars(interval):
            return ()
        holes: list[BarRange] = []
        settled_before = now - self._hole_grace_ms
        present = [*bars["open_time"].cast(pa.int64()).to_pylist(), *page.unstorable]
        for gap in missing_opens(interval, window, present):
            if next_open_ms(interval, gap.start_ms) <= settled_before:
                end = min(gap.end_ms, align_ms(interval, settled_before))
                if end > gap.start_ms:
                    holes.append(BarRange(gap.start_ms, end))
        return tuple(holes)

    def _store_unit(self, symbol: str, interval: str, unit: list[_Item], report: SyncReport,
                    finish: BarRange | None = None) -> list[BarRange]:
        """Store whole pages in one session: their bars in one upsert, then the holes they proved.
        With `finish` (the last unit), the same session checks what is left of it (`_finish`)."""
        tables = [item.page.table for item in unit if item.page.rows]
        holes = [h for item in unit for h in item.holes]
        left: list[BarRange] = []
        if tables or holes or finish is not None:
            with self._store.session(threads=1) as s:
                if tables:
                    # Gaps by the plan, so expected new. The pages' windows do not overlap, except a
                    # probe's page and the windows after it: write_batch keeps one copy of a key.
                    result = s.write_batch(Batch(table=pa.concat_tables(tables), rejected=()), expect_new=True)
                    report.bars_stored += result.written
                    report.pages_stored += len(tables)
                if holes:
                    s.add_venue_holes(symbol, interval, holes)
                    report.venue_holes.extend(holes)
                    self._log.info("sync.venue_hole", symbol=symbol, interval=interval,
                                   holes=[h.describe() for h in holes], bars=sum(h.bars(interval) for h in holes))
                if finish is not None:
                    left = self._finish(s, symbol, interval, finish, report)
        if unit:
            self._report_progress(symbol, interval, report, unit[-1].settled)
        return left

    # --- requests -------------------------------------------------------------

    def _page_table(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> _Page:
        """One page in columns: straight from the venue's rows when the source gives them and the
        page passes as a whole (`table_from_rows`), else through ClosedBar, row by row."""
        source = self._source
        if isinstance(source, KlineRowSource):
            rows = source.fetch_kline_rows(symbol, interval, start_ms, end_ms, limit=PAGE_LIMIT)
            table = table_from_rows(symbol, interval, rows)
            if table is not None:
                return _Page(table)
            bars = source.parse_kline_rows(symbol, interval, rows)
        else:
            bars = source.fetch_klines(symbol, interval, start_ms, end_ms, limit=PAGE_LIMIT)
        batch = build_batch(bars)  # a bar whose decimals the column cannot hold is set aside, as write_bars does
        return _Page(batch.table, tuple(b.open_ms for b in batch.rejected))

    def _fetch(self, symbol: str, interval: str, start_ms: int, end_ms: int, report: SyncReport,
               stop: threading.Event | None = None) -> _Page:
        """One page with retries. With `stop` (the fetcher's), a backoff ends as soon as the sync
        stops (a store failure, Ctrl-C), and no request is sent after that: a rate limit's wait
        can be minutes, and the sync must not outlive its reason to fetch by that long."""
        policy = self._retry
        backoff = wait_random_exponential(multiplier=policy.initial_s, max=policy.max_s)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            hinted = getattr(exc, "retry_after_s", None) or 0.0
            return max(backoff(state), min(float(hinted), policy.max_hint_s))

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            with _COUNTS:
                report.retries += 1
            self._log.warning(
                "sync.retry",
                symbol=symbol,
                interval=interval,
                window=BarRange(start_ms, next_open_ms(interval, end_ms)).describe(),
                attempt=state.attempt_number,
                of=policy.attempts,
                error=f"{type(exc).__name__}: {exc}",
                wait_s=round(state.upcoming_sleep, 3),
            )

        def pause(seconds: float) -> None:
            if self._sleep is not None:
                self._sleep(seconds)
            elif stop is not None:
                stop.wait(seconds)
            else:
                time.sleep(seconds)

        def once() -> _Page:
            if stop is not None and stop.is_set():
                raise _Stopped("the sync stopped")
            with _COUNTS:
                report.requests += 1
            return self._page_table(symbol, interval, start_ms, end_ms)

        retrying = Retrying(
            stop=stop_after_attempt(policy.attempts),
            wait=wait,
            retry=retry_if_exception_type(TransientError),
            before_sleep=before_sleep,
            sleep=pause,
            reraise=True,
        )
        return retrying(once)

    def _report_progress(self, symbol: str, interval: str, report: SyncReport, done: int) -> None:
        if self._progress is not None:
            self._progress(Progress(symbol, interval, min(done, report.planned_bars), report.planned_bars))


__all__ = [
    "HistorySync",
    "KlineSource",
    "Progress",
    "RetryPolicy",
    "SyncFailed",
    "SyncReport",
    "venue_clock",
    "wanted_range",
]
