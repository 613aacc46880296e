"""`python main.py sync | gaps | heal`: the history commands.

They share the history file with a running node: each unit of work (a
page, a scan) takes the file for a moment and gives it back, so the node's
DbWriter writes in between. If the file stays busy longer than
`db_writer.lock_timeout_s`, the command says which process holds it and
exits 1.

Long work shows a progress bar on a terminal and plain log events
otherwise. Exit codes: 0 done, 1 failed (busy file, venue errors, gaps left).
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator

from infra.cli_args import positive_int
from infra.logging import flush_logging, say

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DEFAULT_DAYS = 30
# Literal copy of messages.types.INTERVALS: this module is imported while the
# parser is built, before anything heavy.
_INTERVALS = ("1", "3", "5", "15", "30", "60", "120", "240", "360", "720", "D", "W", "M")


def add_history_commands(sub: Any) -> None:
    """Add the sync, gaps and heal subparsers to main.py's parser."""
    sync = sub.add_parser(
        "sync",
        help="fetch OHLCV history into the DuckDB file (every gap in the range, not only the edges)",
        description=(
            "Fetch every bar the venue has in the range that the history file lacks: the edges and every "
            "internal gap. Ranges the venue has no bars for are remembered and not asked for again. "
            "Default: every configured symbol and interval, the last 30 days."
        ),
    )
    sync.add_argument("--symbol", action="append", metavar="S", help="only this symbol (repeatable)")
    sync.add_argument("--interval", action="append", choices=_INTERVALS, metavar="I",
                      help="only this interval (repeatable): " + " ".join(_INTERVALS))
    when = sync.add_mutually_exclusive_group()
    when.add_argument("--days", type=positive_int, metavar="N", help=f"the last N days (default {DEFAULT_DAYS})")
    when.add_argument("--start", type=_utc, metavar="TIME", help="range start, UTC (2024-01-31 or 2024-01-31T12:00)")
    sync.add_argument("--end", type=_utc, metavar="TIME", help="range end, UTC (default: now)")

    gaps = sub.add_parser(
        "gaps",
        help="list gaps and venue holes per symbol/interval",
        description="A table of every stored series: bars, first/last bar, fillable gaps, venue holes, last sync/heal.",
    )
    gaps.add_argument("--symbol", action="append", metavar="S", help="only this symbol (repeatable)")
    gaps.add_argument("--interval", action="append", metavar="I", help="only this interval (repeatable)")
    gaps.add_argument("--limit", type=positive_int, default=10, metavar="N",
                      help="ranges listed per series (default %(default)s)")

    heal = sub.add_parser(
        "heal",
        help="check every stored series, refetch its gaps, report before/after",
        description="For every stored series: count bars, duplicates and gaps, refetch every fillable gap, count again.",
    )
    heal.add_argument("--symbol", action="append", metavar="S", help="only this symbol (repeatable)")
    heal.add_argument("--interval", action="append", metavar="I", help="only this interval (repeatable)")


def _utc(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date/time: {text!r} (e.g. 2024-01-31 or 2024-01-31T12:00)") from None
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


# --- shared ------------------------------------------------------------------


def _wanted(app: Any, args: argparse.Namespace) -> list[tuple[str, str]]:
    """(symbol, interval) pairs: --symbol or every configured symbol; --interval or each one's configured intervals."""
    configured = app.node.symbols
    pairs = []
    for symbol in args.symbol or list(configured):
        if args.interval:
            intervals = args.interval
        elif symbol in configured:
            intervals = list(configured[symbol].intervals)
        else:
            raise ValueError(f"{symbol} is not in the config; say which --interval to sync")
        pairs += [(symbol, i) for i in intervals]
    return sorted(set(pairs))


def _selected(args: argparse.Namespace) -> Callable[[str, str], bool]:
    return lambda s, i: (not args.symbol or s in args.symbol) and (not args.interval or i in args.interval)


def _console(stderr: bool = False, *, answers: bool = False):
    """A rich console on stdout (or stderr). With `answers`, each print waits for the log lines
    logged before it, as `infra.logging.say` does: a command's answer never lands among them."""
    from rich.console import Console

    class AnswerConsole(Console):
        def print(self, *objects: Any, **kwargs: Any) -> None:
            flush_logging(timeout_s=1.0)
            super().print(*objects, **kwargs)

    stream = sys.stderr if stderr else sys.stdout
    # Off a terminal rich assumes 80 columns and squeezes the table; a pipe or a log file can take more,
    # unless COLUMNS says how wide the reader is (rich reads it when width is None).
    fits = stream.isatty() or os.environ.get("COLUMNS", "").isdigit()
    return (AnswerConsole if answers else Console)(file=stream, width=None if fits else 160)


def _iso(t: datetime | None) -> str:
    return "-" if t is None else t.strftime("%Y-%m-%d %H:%M")


def _short(t: datetime | None) -> str:
    return "-" if t is None else t.strftime("%y-%m-%d %H:%M")


def store_failed(exc: Exception) -> int:
    """One paragraph for a store that could not be used: busy (store.busy) or not a history (store.unreadable)."""
    from infra.logging import get_logger
    from infra.store import StoreBusy

    log = get_logger("infra.store.cli")
    if isinstance(exc, StoreBusy):
        log.error("store.busy", error=str(exc), file_only=True)
    else:
        log.error("store.unreadable", error=str(exc), file_only=True)
    say(f"error: {exc}", file=sys.stderr)
    return EXIT_FAILURE



def _checked(app: Any, store: Any) -> None:
    """Refuse a damaged file before any session (a session migrates, so it would write)."""
    from infra.store.lock import on_wait
    from infra.store.verify import verify_store

    on_wait(lambda text: say(text, file=sys.stderr))  # once per wait, before the long silence

    verify_store(store.path, lock_timeout_s=store.lock_timeout_s, owner=store.lock.owner,
                 catch_up_days=app.node.db_writer.catch_up_days)


# --- gaps --------------------------------------------------------------------


def gaps_command(app: Any, args: argparse.Namespace) -> int:
    from rich.table import Table

    from infra.store import HistoryStore, StoreError
    from infra.store.ranges import BarRange
    from messages.types import next_open_ms, utc_to_ms

    store = HistoryStore.for_node(app.node, owner="main.py gaps")
    console = _console(answers=True)
    if not store.exists():
        console.print(f"no history yet: {store.path} does not exist (run `python main.py sync`)")
        return EXIT_OK
    keep = _selected(args)
    rows, details = [], []
    try:
        _checked(app, store)
        with store.session() as s:
            for info in s.series():
                if not keep(info.symbol, info.interval) or info.first_open is None or info.last_open is None:
                    continue
                span = BarRange(utc_to_ms(info.first_open), next_open_ms(info.interval, utc_to_ms(info.last_open)))
                gaps = s.fillable_gaps(info.symbol, info.interval, span)
                holes = s.venue_holes(info.symbol, info.interval)
                rows.append((info, s.count(info.symbol, info.interval), gaps, holes))
    except StoreError as exc:
        return store_failed(exc)
    # Seven columns without vertical rules, two-line cells for the times: fits 80 columns.
    from rich import box

    table = Table(title=f"history in {store.path}", box=box.SIMPLE_HEAD,
                  caption="gaps, venue holes: ranges (bars); times UTC, yy-mm-dd")
    for col, justify in (("symbol", "left"), ("int.", "left"), ("bars", "right"), ("first/last bar", "left"),
                         ("gaps", "right"), ("holes", "right"), ("sync/heal", "left")):
        table.add_column(col, justify=justify, overflow="fold", no_wrap=col in ("symbol", "int."))
    total_gaps = 0
    for info, bars, gaps, holes in rows:
        missing = sum(g.bars(info.interval) for g in gaps)
        total_gaps += len(gaps)
        table.add_row(info.symbol, info.interval, str(bars), f"{_short(info.first_open)}\n{_short(info.last_open)}",
                      f"{len(gaps)} ({missing})", f"{len(holes)} ({sum(h.bars(info.interval) for h in holes)})",
                      f"{_short(info.last_sync_at)}\n{_short(info.last_heal_at)}")
        for kind, ranges in (("gap", gaps), ("venue hole", holes)):
            for r in ranges[: args.limit]:
                details.append(f"  {info.symbol} {info.interval} {kind}: {r.describe()} ({r.bars(info.interval)} bars)")
            if len(ranges) > args.limit:
                details.append(f"  {info.symbol} {info.interval} ... and {len(ranges) - args.limit} more {kind}s")
    if not rows:
        console.print(f"no stored series match in {store.path}")
        return EXIT_OK
    console.print(table)
    for line in details:
        console.print(line, highlight=False)
    if total_gaps:
        console.print(f"{total_gaps} fillable gap(s): `python main.py heal` refetches them", highlight=False)
    return EXIT_OK


# --- sync and heal ---------------------------------------------------------------


def _progress_reporter(total_series: int):
    """A context manager yielding a `Progress` callback: a bar on a terminal, log events otherwise."""

    @contextmanager
    def reporter() -> Iterator[Callable[[Any], None]]:
        if sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeRemainingColumn(), console=_console(stderr=True), transient=False) as bar:
                tasks: dict[tuple[str, str], Any] = {}

                def on_progress(p: Any) -> None:
                    key = (p.symbol, p.interval)
                    if key not in tasks:
                        tasks[key] = bar.add_task(f"{p.symbol} {p.interval}", total=max(1, p.total_bars))
                    bar.update(tasks[key], completed=p.done_bars, total=max(1, p.total_bars))

                yield on_progress
            return
        import time

        from infra.logging import get_logger

        log = get_logger("infra.store.cli")
        last: dict[tuple[str, str], float] = {}

        def on_progress(p: Any) -> None:
            key = (p.symbol, p.interval)
            now = time.monotonic()
            if p.done_bars >= p.total_bars or now - last.get(key, 0.0) >= 5.0:
                last[key] = now
                log.info("sync.progress", symbol=p.symbol, interval=p.interval, done_bars=p.done_bars,
                         total_bars=p.total_bars)

        yield on_progress

    return reporter()


def sync_command(app: Any, args: argparse.Namespace, source_factory: Callable[[Any], Any] | None = None) -> int:
    from infra.store import HistoryStore, StoreError

    now = datetime.now(timezone.utc)
    end = args.end or now
    start = args.start or end - timedelta(days=args.days or DEFAULT_DAYS)
    if start >= end:
        say(f"error: --start {start.isoformat()} is not before --end {end.isoformat()}", file=sys.stderr)
        return EXIT_USAGE
    try:
        pairs = _wanted(app, args)
    except ValueError as exc:
        say(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    store = HistoryStore.for_node(app.node, owner="main.py sync")
    failed: list[str] = []
    try:
        _checked(app, store)
        return _sync_pairs(app, store, pairs, start, end, failed, source_factory)
    except StoreError as exc:
        return store_failed(exc)


def _sync_pairs(app: Any, store: Any, pairs: list[tuple[str, str]], start: datetime, end: datetime,
                failed: list[str], source_factory: Callable[[Any], Any] | None) -> int:
    from infra.store import StoreBusy
    from infra.store.sync import SyncFailed

    with (source_factory or venue_source)(app) as (source, now_ms):
        with _progress_reporter(len(pairs)) as on_progress:
            sync = _history_sync(app, store, source, now_ms, on_progress)
            for symbol, interval in pairs:
                try:
                    report = sync.sync(symbol, interval, start, end)
                except SyncFailed as exc:
                    failed.append(f"{symbol} {interval}: {exc.report.error}")
                    continue
                except StoreBusy as exc:
                    return store_failed(exc)
                _summary(symbol, interval, report)
    for line in failed:
        say(f"error: sync {line}", file=sys.stderr)
    return EXIT_FAILURE if failed else EXIT_OK


def _summary(symbol: str, interval: str, report: Any) -> None:
    holes = f", {len(report.venue_holes)} new venue hole(s)" if report.venue_holes else ""
    say(f"{symbol} {interval}: {report.bars_stored} bars stored in {report.pages_stored} page(s), "
        f"{report.requests} request(s), {report.retries} retr{'y' if report.retries == 1 else 'ies'}{holes}")


def _history_sync(app: Any, store: Any, source: Any, now_ms: Any, progress: Callable[[Any], None]) -> Any:
    """The sync `sync` and `heal` page with: the venue's clock, the progress line, the configured in-flight count."""
    from infra.store.sync import HistorySync

    return HistorySync(store, source, now_ms=now_ms, progress=progress,
                       in_flight=app.node.exchange.kline_requests_in_flight)


def _change(before: int, after: int | None) -> str:
    return f"{before} -> {'-' if after is None else after}"


def heal_command(app: Any, args: argparse.Namespace, source_factory: Callable[[Any], Any] | None = None) -> int:
    from rich.table import Table

    from infra.store import HistoryStore, StoreError
    from infra.store.heal import heal

    store = HistoryStore.for_node(app.node, owner="main.py heal")
    console = _console(answers=True)
    if not store.exists():
        console.print(f"no history yet: {store.path} does not exist (run `python main.py sync`)")
        return EXIT_OK
    try:
        _checked(app, store)
        with (source_factory or venue_source)(app) as (source, now_ms):
            with _progress_reporter(0) as on_progress:
                reports = heal(store, _history_sync(app, store, source, now_ms, on_progress), only=_selected(args))
    except StoreError as exc:
        return store_failed(exc)
    # before -> after in one cell, no vertical rules: fits 80 columns, and a number is folded, never cut.
    from rich import box

    table = Table(title=f"heal of {store.path}", box=box.SIMPLE_HEAD, caption="before -> after")
    for col, justify in (("symbol", "left"), ("int.", "left"), ("bars", "right"), ("gaps", "right"),
                         ("missing", "right"), ("dup.", "right"), ("holes", "right"), ("result", "left")):
        table.add_column(col, justify=justify, overflow="fold", no_wrap=col in ("symbol", "int."))
    for r in reports:
        a = r.after
        table.add_row(r.symbol, r.interval, _change(r.before.bars, a.bars if a else None),
                      _change(r.before.gaps, a.gaps if a else None),
                      _change(r.before.missing_bars, a.missing_bars if a else None),
                      str(a.duplicates) if a else "-", str(a.venue_holes) if a else "-",
                      "ok" if r.ok else f"FAILED: {r.error or 'gaps left'}")
    console.print(table)
    return EXIT_OK if all(r.ok for r in reports) else EXIT_FAILURE


# --- where bars come from ------------------------------------------------------------


@contextmanager
def venue_source(app: Any) -> Iterator[tuple[Any, Callable[[], int]]]:
    """(kline source, now_ms) for the configured venue: the gateway's backfill lane.

    For venue `sim` the built-in simulator is started on 127.0.0.1 for the
    command's duration (its history is a pure function of its seed, so this
    is the same history a running node's simulator serves). "Now" is the
    venue's clock: our wall clock corrected by the skew the venue reports.
    """
    from infra.bybit.gateway import Gateway
    from infra.store.sync import venue_clock
    from infra.venue import open_venue

    with open_venue(app.node) as urls:
        gateway = Gateway.from_config(app, urls)
        try:
            yield gateway, venue_clock(gateway)
        finally:
            gateway.close()
