"""Bybit V5 trading node - command line.

    python main.py [--config FILE] [run] [--duration SECONDS]
    python main.py [--config FILE] preflight [--read-only] [--i-mean-live]
    python main.py [--config FILE] sync [--symbol S] [--interval I] [--days N | --start T [--end T]]
    python main.py [--config FILE] gaps | heal
    python main.py [--config FILE] signal SYMBOL long|short|flat [--usd N] [--wait SECONDS]
    python main.py [--config FILE] panic
    python main.py [--config FILE] status [--json]

Exit codes: 0 success, 1 runtime failure, 2 bad configuration or usage,
130 forced exit on a second Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from infra.cli_args import positive_float

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_FORCED = 0, 1, 2, 130


def say(*args, **kwargs) -> None:
    """`infra.logging.say` (print after the log lines before it), imported when first needed:
    `--help` and the argument errors stay free of the logging stack's import time."""
    from infra.logging import say as say_after_logs

    say_after_logs(*args, **kwargs)


DESCRIPTION = """\
The data and exchange layer of a Bybit V5 trading node (USDT perpetuals).
It keeps live market and account state from Bybit's WebSockets, an OHLCV
history in DuckDB, and turns trading signals into orders only after risk and
safety checks pass. With the default config (venue: sim) it runs against a
built-in Bybit simulator on 127.0.0.1: no keys, no network.
"""

EPILOG = """\
configuration:
  config.yaml holds the defaults. Any field can be overridden from the
  environment as BYBIT_NODE_<FIELD>, nested fields joined by "__", for example
  BYBIT_NODE_VENUE=testnet or BYBIT_NODE_RISK__MAX_LEVERAGE=3. API credentials come only
  from BYBIT_API_KEY and BYBIT_API_SECRET.

logs:
  JSON lines in <data_dir>/logs/node.jsonl (the running node starts a new file at
  log.file_max_mb, keeping log.file_backups old ones: node.jsonl.1 is the newest);
  readable lines on the terminal.
  docs/OPERATIONS.md explains every event.

exit codes: 0 ok, 1 failure, 2 bad configuration, 130 forced exit.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", default="config.yaml", metavar="FILE", help="configuration file (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="run the node (the default command)",
        description="Start the actor system and run until Ctrl-C / SIGTERM (a second Ctrl-C forces the exit).",
    )
    _add_run_args(run)
    preflight = sub.add_parser(
        "preflight",
        help="check everything a live start needs; exit 1 if a start would be refused",
        description=(
            "Print one report of every start check (venue/mode, live confirmation, API key permissions, "
            "clock skew, one-way mode, leverage caps, disconnect-cancel-all, risk limits) for the configured "
            "venue. Exit 0 when a start would be allowed, 1 when it would be refused. By default it makes the "
            "same idempotent account changes the node makes at start (one-way mode, DCP window, leverage "
            "lowered to risk.max_leverage); --read-only only reads."
        ),
    )
    preflight.add_argument("--read-only", action="store_true", help="only read; change nothing on the account")
    preflight.add_argument(
        "--i-mean-live", action="store_true", help="check as a confirmed live start (same as live_confirmed: true)"
    )
    from infra.store.cli import add_history_commands

    add_history_commands(sub)
    from actors.control import add_control_commands

    add_control_commands(sub)
    _add_status_parser(sub)
    return parser


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=positive_float, metavar="SECONDS", help="stop by itself after this long")
    p.add_argument(
        "--i-mean-live",
        action="store_true",
        help="confirm live trading with real money (same as live_confirmed: true); only valid with venue mainnet",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # `python main.py` means `python main.py run`
        args = parser.parse_args([*(argv if argv is not None else sys.argv[1:]), "run"])
    if getattr(args, "i_mean_live", False):
        os.environ["BYBIT_NODE_LIVE_CONFIRMED"] = "true"
    try:
        return _configured_command(args)
    except KeyboardInterrupt:  # before `run` installs its handlers, or in sync/gaps/heal
        say(_interrupted_message(args.command), file=sys.stderr)
        return EXIT_FORCED


# --- one clear answer per failure: exit code and one paragraph, never a traceback ---


def _configured_command(args) -> int:
    from infra.config import ConfigError, load_config
    from infra.logging import configure_logging, get_logger, shutdown_logging

    try:
        app = load_config(args.config)
    except ConfigError as exc:
        say(exc.render(), file=sys.stderr)
        return EXIT_CONFIG
    node = app.node
    if node.data_dir.exists() and not node.data_dir.is_dir():
        say(f"configuration error in {app.source}:\n  - data_dir: {node.data_dir} is a file, not a directory",
            file=sys.stderr)
        return EXIT_CONFIG
    log_path = node.log_path
    if _reads_only(args) and not log_path.parent.is_dir():
        log_path = None  # a read command creates nothing: the console is its log
    try:
        # Only the long-lived node rotates the file; a short command appends to whatever file
        # is current (two processes rotating one file would shuffle each other's files).
        rotates = args.command == "run" and node.log.file_max_bytes > 0
        configure_logging(level=node.log.level, console=node.log.console, file_path=log_path,
                          secrets=app.secret_values(), max_bytes=node.log.file_max_bytes if rotates else 0,
                          backups=node.log.file_backups)
    except OSError as exc:
        say(f"error: cannot write the log file {node.log_path}: {exc.strerror or exc}. data_dir "
            f"({node.data_dir}) must be a writable directory; point data_dir (or log.file) elsewhere.",
            file=sys.stderr)
        return EXIT_FAILURE
    try:
        return _dispatch(app, args)
    except Exception as exc:  # noqa: BLE001 - the one place that turns a failure into an exit code
        return _failed(args.command, exc, get_logger("node"), node.log_path if log_path else None)
    finally:
        shutdown_logging()


def _reads_only(args) -> bool:
    return args.command in ("gaps", "status") or (args.command == "preflight" and args.read_only)


def _dispatch(app, args) -> int:
    from actors import control as control_cli
    from infra.store import cli as history_cli

    commands: dict[str, Callable[..., int]] = {
        "run": run_node,
        "preflight": preflight_command,
        "sync": history_cli.sync_command,
        "gaps": history_cli.gaps_command,
        "heal": history_cli.heal_command,
        "signal": control_cli.signal_command,
        "panic": control_cli.panic_command,
        "status": status_command,
    }
    return commands[args.command](app, args)


def _interrupted_message(command: str | None) -> str:
    if command in ("sync", "heal"):
        return (f"interrupted: `{command}` stopped by Ctrl-C. The history file is consistent (each unit of pages "
                f"is written in one transaction); run `python main.py {command}` again to finish.")
    return f"interrupted: `{command}` stopped by Ctrl-C."


def _interrupted(exc: BaseException, duckdb) -> bool:
    """A Ctrl-C that DuckDB caught and reported as its own error.

    DuckDB turns the interrupt into InterruptException, or, when it met the
    KeyboardInterrupt while calling back into Python (reading a registered
    Arrow table), into another of its errors that says so only in its text.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (KeyboardInterrupt, duckdb.InterruptException)):
            return True
        text = str(seen)
        if isinstance(seen, (duckdb.Error, RuntimeError)) and ("KeyboardInterrupt" in text or "interrupted" in text.lower()):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _failed(command: str, exc: BaseException, log, log_path) -> int:
    """An error no command handled: one paragraph on stderr, the traceback only in the log file."""
    import duckdb

    from infra.store import StoreError

    if _interrupted(exc, duckdb):  # Ctrl-C met inside a DuckDB statement
        say(_interrupted_message(command), file=sys.stderr)
        return EXIT_FORCED
    if isinstance(exc, StoreError):
        from infra.store.cli import store_failed

        return store_failed(exc)
    if isinstance(exc, OSError):
        what = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
        say(f"error: `{command}` failed: {what}. Check that data_dir exists, is a directory and is writable.",
            file=sys.stderr)
        log.error("node.os_error", command=command, error=str(exc), file_only=True)
        return EXIT_FAILURE
    log.error("node.crashed", command=command, error=repr(exc), exc_info=exc, file_only=True)
    where = f"; the traceback is in {log_path}" if log_path else ""
    say(f"error: `{command}` failed unexpectedly: {type(exc).__name__}: {exc}{where}. This is a bug: "
        "please report it with that log.", file=sys.stderr)
    return EXIT_FAILURE


def run_node(app, args) -> int:
    from infra.logging import get_logger
    from infra.presence import NodeAlreadyRunning, NodePresence

    node = app.node
    log = get_logger("node")
    stop = StopRequest(forced_log=node.log_path)
    _install_signal_handlers(stop)

    log.info(
        "node.starting",
        venue=node.venue.value,
        trading_mode=node.trading_mode.value,
        symbols={s: list(c.intervals) for s, c in node.symbols.items()},
        data_dir=str(node.data_dir),
        config=app.source,
        credentials=app.credentials.source if app.credentials else None,
        pid=os.getpid(),
    )
    started = time.monotonic()
    presence = NodePresence(node.data_dir, node.venue.value)
    try:
        presence.acquire()
    except NodeAlreadyRunning as exc:
        log.error("node.already_running", pid=exc.pid, data_dir=str(node.data_dir), venue=node.venue.value)
        say(f"error: {exc}. Stop it first (or use another data_dir).", file=sys.stderr)
        return EXIT_FAILURE
    try:
        if not _history_readable(app, log):
            return EXIT_FAILURE
        return _run_supervised(app, args, log, stop, started)
    finally:
        presence.release()


def _history_readable(app, log) -> bool:
    """A damaged history file refuses the start: a node whose every flush fails would lose bars while it looks healthy."""
    from infra.store import StoreBusy, StoreError
    from infra.store.verify import verify_store

    node = app.node
    try:
        verify_store(node.db_path, lock_timeout_s=float(node.db_writer.lock_timeout_s), owner="node start-up check",
                     catch_up_days=node.db_writer.catch_up_days)
    except StoreBusy as exc:
        log.error("store.busy", path=str(node.db_path), error=str(exc), file_only=True)
        say(f"error: {exc}", file=sys.stderr)
        return False
    except StoreError as exc:
        log.error("store.unreadable", path=str(node.db_path), error=str(exc), file_only=True)
        say(f"error: the node did not start: {exc}", file=sys.stderr)
        return False
    return True


def _run_supervised(app, args, log, stop, started) -> int:
    import pykka

    from actors.base import Directory, Role
    from actors.supervisor import Supervisor
    from actors.tree import default_children
    from infra.bybit.gateway import Gateway
    from infra.market_reader import LiveMarketReader
    from infra.venue import open_venue
    from messages.control import Ping

    node = app.node
    with open_venue(node) as urls, closing(Gateway.from_config(app, urls)) as gateway:
        safety = _startup_safety(app, gateway, urls, log)
        if safety is None:
            return EXIT_FAILURE
        directory = Directory()
        # One reader for Risk and the Executor: the StateStore first, REST (query lane) as fallback (DATA-023).
        reader = LiveMarketReader.from_config(node, lambda: directory.get(Role.STATE_STORE), gateway)
        supervisor = Supervisor.start(app, directory, default_children(node), urls=urls, gateway=gateway,
                                      market_reader=reader)
        start_timeout = float(node.supervisor.ask_timeout_s) * (len(default_children(node)) + 1)
        try:
            roles = supervisor.ask(Ping(), timeout=start_timeout) and supervisor.proxy().running_roles().get(timeout=5)
        except (pykka.ActorDeadError, pykka.Timeout) as exc:
            log.error("node.start_failed", error=repr(exc))
            _stop(supervisor, node, log)
            return EXIT_FAILURE
        log.info(
            "node.started",
            children=roles,
            may_trade=safety.may_trade,
            dcp_armed=safety.dcp_armed,
            startup_ms=round((time.monotonic() - started) * 1000, 1),
        )

        control = _start_control(app, directory, log)
        publisher = _status_publisher(node, directory)
        log.info("node.stopping", reason=_wait_publishing(stop, args.duration, publisher))
        stopping = time.monotonic()
        if control is not None:
            control.stop()
        code = _stop(supervisor, node, log)
        publisher.remove()
    log.info("node.stopped", exit_code=code, shutdown_ms=round((time.monotonic() - stopping) * 1000, 1))
    return code


def _start_control(app, directory, log):
    """`signal` / `panic` from another process: a watched directory under <data_dir>/run/, never a socket."""
    from actors.control import node_handler
    from infra.control import ControlWatcher

    node = app.node
    handler = node_handler(directory, node)
    try:
        return ControlWatcher(node.data_dir, node.venue.value, handler, poll_s=node.panic.control_poll_ms / 1000).start()
    except OSError as exc:  # the node still runs; only the command line cannot reach it
        log.error("control.unavailable", error=str(exc), consequence="`signal` and `panic` cannot reach this node")
        return None


def _status_publisher(node, directory):
    from actors.base import Role
    from infra.status import StatusPublisher

    return StatusPublisher(
        node.data_dir, node.venue.value,
        state_store=lambda: directory.get(Role.STATE_STORE),
        panic=lambda: directory.get(Role.PANIC),
        db_writer=lambda: directory.get(Role.DB_WRITER),
    )


def _wait_publishing(stop, duration, publisher) -> str:
    """Wait for a stop signal (or `duration`), rewriting the status file about every second."""
    from infra.status import INTERVAL_S

    deadline = None if duration is None else time.monotonic() + duration
    while True:
        publisher.publish()
        left = INTERVAL_S if deadline is None else min(INTERVAL_S, deadline - time.monotonic())
        if left <= 0:
            return "duration"
        reason = stop.wait(left)
        if reason != "duration":
            return reason


def _add_status_parser(sub) -> None:
    status = sub.add_parser(
        "status",
        help="show the running node's state: trading state, ready, streams, positions, orders, wallet",
        description=(
            "Print what the node running on this data directory and venue publishes every second: venue, "
            "trading state, ready (and why not), per-stream age/stale/frames, positions with unrealised PnL, "
            "open orders, wallet equity, DbWriter queue and last flush. Exit 1 when no node is running."
        ),
    )
    status.add_argument("--json", action="store_true", help="print the status as JSON")


def status_command(app, args) -> int:
    from infra.status import STALE_AFTER_S, StatusUnavailable, read_live_status, render

    node = app.node
    try:
        status = read_live_status(node.data_dir, node.venue.value)
    except StatusUnavailable as exc:
        say(str(exc), file=sys.stderr)
        return EXIT_FAILURE
    say(json.dumps(status, indent=2) if args.json else render(status))
    return EXIT_OK if status["status_age_s"] <= STALE_AFTER_S else EXIT_FAILURE


def _startup_safety(app, gateway, urls, log):
    """The account checks that come before any actor: None means the start is refused.

    A live start runs the whole preflight and is refused on any failed check.
    Every start puts the account in verified one-way mode and arms
    disconnect-cancel-all when the account has it. A venue that cannot be
    reached refuses the start: the node never runs on unknown account state.
    """
    from infra.bybit.account_safety import prepare_account, unlisted_symbols
    from infra.bybit.errors import ExchangeError
    from infra.bybit.preflight import PreflightRefused, require_preflight
    from infra.config import TradingMode

    node = app.node
    try:
        clock = gateway.server_time()  # reachable at all? (retried on the query lane)
        log.info("node.venue_reachable", rest_url=urls.rest, skew_ms=clock.skew_ms, round_trip_ms=clock.round_trip_ms)
        unlisted = unlisted_symbols(gateway, node.symbols)
        if unlisted:
            log.error("node.symbols_unlisted", problems=unlisted, file_only=True)
            say("error: the node did not start: " + "; ".join(unlisted) + ". Fix `symbols` in the config "
                "(or BYBIT_NODE_SYMBOLS).", file=sys.stderr)
            return None
        if node.trading_mode is TradingMode.LIVE:
            try:
                require_preflight(gateway, app)
            except PreflightRefused as refused:
                say(refused.report.render(), file=sys.stderr)
                log.error("node.live_start_refused", failed=[c.name for c in refused.report.failed])
                return None
        safety = prepare_account(
            gateway, node.symbols, dcp_window_s=node.exchange.dcp_window_s, max_leverage=node.risk.max_leverage
        )
    except ExchangeError as exc:
        log.error("node.venue_unreachable", error=str(exc), error_type=type(exc).__name__)
        return None
    if not safety.may_trade:
        log.error(
            "node.trading_blocked",
            reason="account not verified safe: one-way mode and leverage within risk.max_leverage",
            problems=[*safety.one_way_problems, *safety.leverage_problems],
        )
    return safety


def preflight_command(app, args) -> int:
    from infra.bybit.preflight import preflight_command as run_preflight_command

    return run_preflight_command(app, apply=not args.read_only)


def _stop(supervisor, node, log) -> int:
    import pykka

    try:
        supervisor.stop(block=True, timeout=float(node.shutdown.graceful_timeout_s) + 1)
    except pykka.Timeout:
        log.error("node.stop_timeout", graceful_timeout_s=float(node.shutdown.graceful_timeout_s))
        return EXIT_FAILURE
    return EXIT_OK


class StopRequest:
    """What a signal handler may touch: plain attributes, no locks.

    A handler runs on the main thread between two bytecodes, possibly while
    that thread holds a lock (an Event's, the logging handler's): taking the
    same lock there deadlocks. So the handler only records the signal, the
    main thread polls for it, and a forced exit writes its log line with one
    raw os.write.
    """

    POLL_S = 0.05

    def __init__(self, forced_log: Path | None = None):
        self.reason: str | None = None
        self._forced_log = forced_log

    def wait(self, timeout: float | None) -> str:
        """Block until a signal (its name) or `timeout` ("duration")."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.reason is None:
            left = self.POLL_S if deadline is None else min(self.POLL_S, deadline - time.monotonic())
            if left <= 0:
                return "duration"
            time.sleep(left)
        return self.reason

    def force_exit(self, signal_name: str) -> None:
        from infra.logging import flush_logging

        flush_logging(timeout_s=1.0)  # what was logged before the second signal, if the writer can
        line = json.dumps({"event": "node.forced_exit", "level": "warning", "signal": signal_name,
                           "ts": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")}) + "\n"
        for path in (self._forced_log, None):
            try:  # the log file, then stderr
                os.write(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT) if path else 2, line.encode())
            except OSError:
                pass
        os._exit(EXIT_FORCED)


def _install_signal_handlers(stop: StopRequest) -> None:
    def handle(signum, _frame):
        name = signal.Signals(signum).name
        if stop.reason is None:
            stop.reason = name
        elif signum == signal.SIGINT:
            stop.force_exit(name)

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


if __name__ == "__main__":
    sys.exit(main())
