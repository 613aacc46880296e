"""One logging pipeline for the node and its libraries.

structlog events carry a stable dotted name (`node.started`, `db.flush`, ...)
and fields. Standard-library records (pybit, pykka, websocket-client, aiohttp)
flow through the same processors and arrive as `lib.log` events with the
original text in `msg`. Every line goes as JSON to the log file; the console
gets readable lines on a terminal and key=value lines otherwise.

Redaction happens twice: sensitive keys are masked in the event dict, and the
final rendered line is scrubbed of every registered secret value and of
anything shaped like an HMAC-SHA256 signature. The second pass is what makes
the guarantee hold for secrets hidden in reprs, tracebacks or library prose.

Rendering and writing happen on one writer thread (the standard library's
QueueListener), not on the thread that logs: an actor pays for its event
dict and a queue put, while the JSON rendering, the redaction and the
file write (flushed once per burst of lines) are done off its path. Lines keep the order
they were logged in. `flush_logging()` waits until everything logged so
far is written; `shutdown_logging()` (and interpreter exit) drains the
queue before the files close. A short path whose latency matters (a signal on
its way to the venue) can hold the writer (`hold_writer`/`release_writer`):
the writer starts no new line meanwhile, for at most HOLD_MAX_S.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import math
import queue
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

REDACTED = "[redacted]"
_MIN_SECRET_LEN = 4
# Hex HMAC-SHA256 (REST X-BAPI-SIGN, WS auth signature). Order ids are UUIDs
# with dashes, so a 64-character hex run is never a legitimate field value.
_SIGNATURE_RE = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])")
_SENSITIVE_KEY_RE = re.compile(
    r"^(x-bapi-)?(api[_-]?key|api[_-]?secret|secret|sign|signature|password|token|authorization)$", re.I
)

# A run of 64 hex characters shows as 64 NULs after this translation: one C-speed pass and a
# substring search say whether the signature regex can match at all. Its lookbehind keeps the
# regex engine from skipping ahead, and ordinary lines are full of hex letters (a-f in words,
# digits in times): measured, 6-12 us of the writer's ~30 us per line for a regex that almost
# never matches. Any NUL already in the text only makes the check say "maybe".
_HEX_TO_NUL = str.maketrans(dict.fromkeys("0123456789abcdefABCDEF", "\0"))
_HEX_RUN = "\0" * 64

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
# Every registered form and the one regex that replaces them, swapped together: `in` per form
# (a C substring search each) is far cheaper than the alternation scanning every position.
_secret_forms: tuple[tuple[str, ...], re.Pattern[str]] | None = None


def register_secrets(values: Iterable[str]) -> None:
    """Add values that must never appear in any log output."""
    global _secret_forms
    with _secrets_lock:
        for value in values:
            if value and len(value) >= _MIN_SECRET_LEN:
                _secrets.add(value)
                _secrets.add(json.dumps(value)[1:-1])  # as it looks inside a JSON string
                _secrets.add(repr(value)[1:-1])  # ... and inside a repr (the key=value console)
        forms = sorted(_secrets, key=len, reverse=True)
        if forms:
            _secret_forms = (tuple(forms), re.compile("|".join(re.escape(s) for s in forms)))


def scrub_text(text: str) -> str:
    """Remove every registered secret and signature-shaped string from `text`.

    Each regex runs only when a cheap exact pre-check says it can match: a line with no
    secret form in it and no 64-character hex run is returned as it is."""
    secrets = _secret_forms
    if secrets is not None:
        forms, pattern = secrets
        for form in forms:
            if form in text:
                text = pattern.sub(REDACTED, text)
                break
    if _HEX_RUN in text.translate(_HEX_TO_NUL):
        text = _SIGNATURE_RE.sub(REDACTED, text)
    return text


_PLAIN = frozenset({str, int, float, bool, type(None)})
_sensitive_keys: dict[Any, bool] = {}  # field names are few and stable: one regex match each


def _sensitive(key: Any) -> bool:
    hit = _sensitive_keys.get(key)
    if hit is None:
        hit = bool(_SENSITIVE_KEY_RE.match(str(key)))
        if len(_sensitive_keys) < 10_000:  # keys made from data (symbols, ids) must not grow it forever
            _sensitive_keys[key] = hit
    return hit


def _masked_changes(items: Iterable[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """The items masking changes, masked: a sensitive key's value, and every container (a masked copy).

    Only the changes, not every item: a line's top level is two dozen plain fields, and building
    a new pair for each one to write it back unchanged was half the cost of redaction."""
    changes = []
    for k, v in items:
        if _sensitive(k):
            changes.append((k, REDACTED))
        elif type(v) not in _PLAIN:
            changes.append((k, _mask(v)))
    return changes


def _mask(value: Any) -> Any:
    """A copy with every sensitive key's value masked; the caller's objects are never changed."""
    if isinstance(value, dict):
        return {**value, **dict(_masked_changes(value.items()))}
    if isinstance(value, (list, tuple)):
        return type(value)(_mask(v) for v in value)
    return value


def redact_event(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Mask the values of sensitive keys anywhere in the event. Secret values and signatures in
    any other field are scrubbed from the rendered line (`_scrubbing`), once per line rather than
    once per field: every registered form of a secret (raw, JSON-escaped, repr) is matched there.

    The event dict itself is the formatter's own copy, so its top level is masked in place;
    nested values belong to the caller and are copied where they change."""
    event_dict.update(_masked_changes(event_dict.items()))
    return event_dict


def _scrubbing(renderer: Callable[[WrappedLogger, str, EventDict], str]):
    def render(logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        return scrub_text(renderer(logger, name, event_dict))

    return render


def _name_foreign_record(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Library records carry prose; give them a stable event name and keep the prose as `msg`."""
    if not event_dict.get("_from_structlog", False):
        event_dict["msg"] = str(event_dict.get("event", ""))
        event_dict["event"] = "lib.log"
    return event_dict


_SHARED: list[Callable[..., Any]] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
]


_second: tuple[float, str] = (-1.0, "")  # the last line's whole second and its date and time of day


def _utc_iso(created: float) -> str:
    """`datetime.fromtimestamp(created, timezone.utc).isoformat()` with Z for +00:00, same text.

    Lines come in bursts within one second: the date and time of day are formatted once per
    second and the microseconds, rounded as datetime rounds them (half to even, carried into
    the second), appended; isoformat leaves them out when they are 0, and so does this.
    About a sixth of the writer's cost per line went into building a datetime for it."""
    global _second
    frac, whole = math.modf(created)
    micro = round(frac * 1e6)
    if micro >= 1_000_000:
        micro -= 1_000_000
        whole += 1.0
    last = _second
    if last[0] == whole:
        prefix = last[1]
    else:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _second = (whole, prefix)
    return f"{prefix}.{micro:06d}Z" if micro else f"{prefix}Z"


def _from_record(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """level, logger and ts of a structlog event, taken on the writer thread from its LogRecord.

    The record was made on the caller's thread when the event happened (`created` is that
    moment), so nothing is lost by formatting them here instead of on an actor's thread
    (measured: the caller's share of a 20-field line went from about 17 to 14 us).
    Library records got theirs from `foreign_pre_chain` already.
    """
    record = event_dict.get("_record")
    if record is not None and event_dict.get("_from_structlog"):
        event_dict["level"] = record.levelname.lower()
        event_dict["logger"] = record.name
        event_dict["ts"] = _utc_iso(record.created)
    return event_dict


def _capture_exc_info(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """`log.exception(...)` means "the exception being handled now": take it on the caller's thread,
    because the line is rendered on the writer thread, where no exception is being handled."""
    if event_dict.get("exc_info") is True:
        event_dict["exc_info"] = sys.exc_info()
    return event_dict


def _exception_in_one_line(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """The terminal gets `Type: message`; the traceback goes to the JSON log file only."""
    exc_info = event_dict.pop("exc_info", None)
    if exc_info:
        if exc_info is True:
            exc_info = sys.exc_info()
        exc = exc_info if isinstance(exc_info, BaseException) else exc_info[1]
        if exc is not None:
            event_dict["exception"] = f"{type(exc).__name__}: {exc}"
    return event_dict


FILE_ONLY = "file_only"


class _NotFileOnly(logging.Filter):
    """Drops events logged with `file_only=True` from the terminal: a command that prints its own
    one-paragraph answer still logs the event, but the operator reads it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, dict) and record.msg.get(FILE_ONLY))


def _drop_file_only_flag(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    event_dict.pop(FILE_ONLY, None)
    return event_dict


def _formatter(renderer: Callable[..., str], *, console: bool = False) -> structlog.stdlib.ProcessorFormatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_SHARED, structlog.stdlib.ExtraAdder()],
        processors=[
            _from_record,  # needs _record, which remove_processors_meta removes
            _name_foreign_record,  # needs _from_structlog, which the next step removes
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _drop_file_only_flag,
            *([_exception_in_one_line] if console else []),
            structlog.processors.format_exc_info,
            redact_event,
            _scrubbing(renderer),
        ],
        pass_foreign_args=False,
    )


def _console_renderer(mode: str, stream: TextIO) -> Callable[..., str] | None:
    if mode == "off":
        return None
    if mode == "json":
        return structlog.processors.JSONRenderer(default=str)
    tty = bool(getattr(stream, "isatty", lambda: False)())
    pretty = mode == "pretty" or (mode == "auto" and tty)
    if pretty:
        return structlog.dev.ConsoleRenderer(colors=tty, pad_event_to=28, exception_formatter=structlog.dev.plain_traceback)
    return structlog.processors.KeyValueRenderer(key_order=["ts", "level", "event"], drop_missing=True)


class _Handoff(logging.handlers.QueueHandler):
    """Hands the record over as it is: the formatter runs on the writer thread.

    The stock `prepare` formats on the caller's thread (to make the record
    picklable for other processes), which is the work this handler exists to
    move. A structlog record's event dict is its own, never touched again by
    the caller, so passing it by reference is safe.
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class _DeferredFlushFileHandler(logging.handlers.RotatingFileHandler):
    """Writes each line at once but flushes the file once per burst, not once per line.

    The writer thread flushes it whenever the queue runs empty: a burst of lines
    costs one write syscall, and nothing waits in the buffer once the burst is over.

    With `maxBytes` it also rotates (the standard library's scheme: node.jsonl.1 is
    the newest old file). The line that crosses the size stays in the full file and
    the next one starts the new file: the stock check renders every line a second
    time to learn its length, and rendering is most of the writer's work.
    """

    def flush(self) -> None:  # called by emit() after every line: deferred to flush_now()
        pass

    def shouldRollover(self, record: logging.LogRecord) -> bool:  # noqa: N802 - the stdlib's name
        return self.maxBytes > 0 and self.stream is not None and self.stream.tell() >= self.maxBytes

    def flush_now(self) -> None:
        super().flush()

    def close(self) -> None:
        self.flush_now()
        super().close()


# How long the writer waits after a line wakes it before it starts rendering. A line is
# logged where something happens, often at the start of a short path (a signal's
# `signal.received`): rendering it at once competes with that path for the interpreter
# lock. Measured on the pre-trade path (bench/bench_pretrade.py): p50 about 500 -> 330-400 us.
# The wait also gathers a burst into one wake and one write. Lines are only late by it.
LINGER_S = 0.001

# A short path whose latency matters (a signal on its way to the venue: actors.executor) holds
# the writer for its duration: the writer then starts no new line until the hold is released,
# and never waits longer than HOLD_MAX_S from the hold's start (a path that hangs does not stop
# the log). Lines are only late by it, never reordered or dropped. One holder at a time is
# meant; a second overlapping one is only a shorter hold.
HOLD_MAX_S = 0.005
_not_held = threading.Event()
_not_held.set()
_held_until = 0.0


def hold_writer() -> None:
    """Keep the writer from starting a new line until `release_writer()` (at most HOLD_MAX_S)."""
    global _held_until
    _held_until = time.monotonic() + HOLD_MAX_S
    _not_held.clear()


def release_writer() -> None:
    _not_held.set()


class _Writer(logging.handlers.QueueListener):
    def dequeue(self, block: bool) -> Any:
        q = self.queue
        if block and q.empty():  # idle: this line wakes the writer (the only reader of the queue)
            record = q.get(True)
            time.sleep(LINGER_S)
            return record
        return q.get(block)

    def handle(self, record: logging.LogRecord) -> None:
        if not _not_held.is_set():
            left = _held_until - time.monotonic()
            if left > 0:
                _not_held.wait(left)
        super().handle(record)
        if self.queue.empty():
            for handler in self.handlers:
                if isinstance(handler, _DeferredFlushFileHandler):
                    handler.flush_now()


_writer: logging.handlers.QueueListener | None = None
_writer_lock = threading.Lock()


def _stop_writer() -> None:
    """Write whatever is queued, stop the writer thread and close its handlers."""
    global _writer
    with _writer_lock:
        writer, _writer = _writer, None
    if writer is not None:
        writer.stop()  # drains the queue first
        for handler in writer.handlers:
            handler.close()


atexit.register(_stop_writer)  # runs before logging's own exit hook (registered earlier, run later)


def writer_handlers() -> tuple[logging.Handler, ...]:
    """The handlers the writer thread writes to (the file, the console): for tests and diagnostics."""
    writer = _writer
    return tuple(writer.handlers) if writer is not None else ()


def flush_logging(timeout_s: float = 5.0) -> bool:
    """Wait until every line logged so far is written; False if `timeout_s` passed first."""
    writer = _writer
    if writer is None:
        return True
    q = writer.queue
    deadline = time.monotonic() + timeout_s
    with q.all_tasks_done:
        while q.unfinished_tasks:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            q.all_tasks_done.wait(left)
    return True


class _SocketEndIsNoError(logging.Filter):
    """websocket-client logs the end of every connection as an error ("<cause> - goodbye"), a
    dropped socket the node reconnects included. The node reports that same end itself, with
    its cause, as `ws.disconnected` (a warning) and acts on it, so the library's line is shown
    as a warning too: an error line that needs no action teaches an operator to skip them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and str(record.msg).endswith(" - goodbye"):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def configure_logging(
    level: str = "INFO",
    console: str = "auto",
    file_path: Path | None = None,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    max_bytes: int = 0,
    backups: int = 0,
) -> None:
    """Install the pipeline on the root logger. Safe to call again (tests, CLI).

    `max_bytes` > 0 rotates the file at that size, keeping `backups` (>= 1) old files;
    only one process should rotate a given file (the node; CLI commands append)."""
    if max_bytes > 0 and backups < 1:
        raise ValueError("rotating the log file needs at least one backup")
    register_secrets(secrets)
    stream = stream if stream is not None else sys.stderr
    root = logging.getLogger()
    file_handler = None
    if file_path is not None:
        # Opened before the old handlers go: a log file that cannot be written raises
        # OSError here and leaves the previous pipeline as it was.
        file_path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = _DeferredFlushFileHandler(file_path, encoding="utf-8", maxBytes=max_bytes,
                                                 backupCount=backups)
        file_handler.setFormatter(_formatter(structlog.processors.JSONRenderer(default=str)))
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    _stop_writer()
    outputs: list[logging.Handler] = []
    if file_handler is not None:
        outputs.append(file_handler)
    renderer = _console_renderer(console, stream)
    if renderer is not None:
        console_handler = logging.StreamHandler(stream)
        console_handler.setFormatter(_formatter(renderer, console=True))
        console_handler.addFilter(_NotFileOnly())
        outputs.append(console_handler)
    if outputs:
        _start_writer(root, outputs)
    else:
        # Without any handler Python's last-resort handler would print raw event dicts to stderr.
        root.addHandler(logging.NullHandler())
    root.setLevel(level)
    # The logging HOWTO's "Optimization" switches, for what no line of ours shows: the caller's
    # file and line (a stack walk on every event, on the actor's thread) and process names.
    logging._srcfile = None
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # Library chatter below WARNING is noise for an operator, not signal.
    for noisy in ("websocket", "urllib3", "aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    socket_lib = logging.getLogger("websocket")
    if not any(isinstance(f, _SocketEndIsNoError) for f in socket_lib.filters):
        socket_lib.addFilter(_SocketEndIsNoError())
    structlog.configure(
        processors=[
            # level, logger and ts are added on the writer thread (_from_record).
            structlog.contextvars.merge_contextvars,
            structlog.processors.StackInfoRenderer(),
            _capture_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Caching would freeze each logger's processors at first use, so a later
        # reconfiguration (or structlog.testing.capture_logs) would miss it.
        cache_logger_on_first_use=False,
    )


def _start_writer(root: logging.Logger, outputs: list[logging.Handler]) -> None:
    global _writer
    q: queue.Queue = queue.Queue()
    writer = _Writer(q, *outputs, respect_handler_level=True)
    writer.start()
    with _writer_lock:
        _writer = writer
    root.addHandler(_Handoff(q))


def say(*args: Any, **kwargs: Any) -> None:
    """`print` for an answer to the person at the terminal, after every line logged so far.

    Log lines reach the console from the writer thread, a moment after they were logged; an
    answer printed at once could land between them (an error sentence cut into the log lines
    before it). Same arguments as `print`; the stream is flushed.
    """
    flush_logging(timeout_s=1.0)
    kwargs.setdefault("flush", True)
    print(*args, **kwargs)


def shutdown_logging() -> None:
    """Write what is queued, then flush and close handlers (files) at exit."""
    _stop_writer()
    logging.shutdown()


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
