"""Logging: stable event names, JSON file, library records routed, and secrets never written."""

from __future__ import annotations

import io
import logging

import pytest
import structlog

from infra.logging import REDACTED, configure_logging, flush_logging, get_logger, writer_handlers
from tests.helpers import read_events

KEY = "Xk3vQ9TestApiKey77"
SECRET = "Zs8PtestSecretValue0123456789abcdEF"
# What an HMAC-SHA256 request signature looks like on the wire.
SIGNATURE = "9f2c4e6a8b0d1f3e5a7c9b1d3f5e7a9c0b2d4f6e8a1c3e5b7d9f0a2c4e6b8d0f"


@pytest.fixture
def logs(tmp_path):
    console = io.StringIO()
    path = tmp_path / "logs" / "node.jsonl"
    configure_logging(level="DEBUG", console="plain", file_path=path, secrets=[KEY, SECRET], stream=console)
    yield path, console
    configure_logging(console="off", file_path=None)


def test_events_are_json_lines_with_name_level_and_utc_time(logs):
    path, console = logs
    get_logger("node").info("node.started", children=["a", "b"])
    (line,) = read_events(path)
    assert line["event"] == "node.started" and line["level"] == "info" and line["children"] == ["a", "b"]
    assert line["ts"].endswith("Z") and line["logger"] == "node"
    assert "event='node.started'" in console.getvalue()


def test_library_records_join_the_same_pipeline(logs):
    path, _ = logs
    logging.getLogger("pybit._http_manager").warning("Request failed, retrying %s", "now")
    (line,) = read_events(path)
    assert line == {**line, "event": "lib.log", "msg": "Request failed, retrying now", "logger": "pybit._http_manager"}


def test_a_socket_ending_is_a_warning_from_the_library_too_other_errors_stay_errors(logs):
    path, _ = logs
    logging.getLogger("websocket").error("Connection to remote host was lost. - goodbye")
    logging.getLogger("websocket").error("Handshake status 500 Internal Server Error")
    ended, failed = read_events(path)
    assert ended["level"] == "warning" and ended["msg"] == "Connection to remote host was lost. - goodbye"
    assert failed["level"] == "error" and failed["event"] == "lib.log"


def test_secrets_never_reach_the_file_or_the_console(logs):
    path, console = logs
    log = get_logger("leaky")
    # Every way a secret could sneak in: a field, a nested structure, the event text,
    # an exception message, a library's prose, an unknown object's repr.
    log.info("leak.field", api_key=KEY, note=f"key is {KEY}")
    log.info("leak.nested", request={"headers": {"X-BAPI-API-KEY": KEY, "X-BAPI-SIGN": SIGNATURE}, "args": [SECRET]})
    log.info(f"leak.event {SECRET}")
    try:
        raise RuntimeError(f"auth failed for {KEY} with {SECRET}")
    except RuntimeError:
        log.exception("leak.exception")

    class Creds:
        def __repr__(self):
            return f"Creds({KEY!r}, {SECRET!r})"

    log.info("leak.repr", creds=Creds())
    logging.getLogger("pybit._http_manager").debug(
        "Request -> POST /v5/order/create. Headers: %s", {"X-BAPI-API-KEY": KEY, "X-BAPI-SIGN": SIGNATURE}
    )
    logging.getLogger("pybit._websocket_stream").info("auth args %s", [KEY, 1662350400000, SIGNATURE])
    assert flush_logging()
    written = path.read_text()
    shown = console.getvalue()
    for text in (written, shown):
        assert KEY not in text and SECRET not in text and SIGNATURE not in text
        assert REDACTED in text
    events = [line["event"] for line in read_events(path)]
    # The lines are still there, only the secrets are gone.
    assert events[:2] == ["leak.field", "leak.nested"] and "leak.exception" in events and "lib.log" in events
    exc_line = next(line for line in read_events(path) if line["event"] == "leak.exception")
    assert "RuntimeError" in exc_line["exception"]


def test_secret_escaped_inside_json_is_still_caught(tmp_path):
    tricky = 'sec"ret\\with-quotes'
    path = tmp_path / "n.jsonl"
    configure_logging(console="off", file_path=path, secrets=[tricky])
    get_logger("x").info("leak.escaped", value=tricky)
    (line,) = read_events(path)
    assert tricky not in line["value"] and REDACTED in line["value"]
    configure_logging(console="off", file_path=None)


def test_secret_with_quotes_is_caught_in_the_key_value_console_too(tmp_path):
    """The console renders values with repr(), which escapes differently from JSON: the rendered
    line is scrubbed of that form as well (fields are no longer scrubbed one by one)."""
    tricky = "it's\"a-secret"  # both quotes: repr escapes the ' and JSON the "
    console = io.StringIO()
    configure_logging(console="plain", file_path=tmp_path / "n.jsonl", secrets=[tricky], stream=console)
    get_logger("x").info("leak.repr_form", value=tricky, nested={"deep": [f"pre {tricky} post"]})
    assert flush_logging()
    shown = console.getvalue()
    assert "leak.repr_form" in shown and REDACTED in shown
    assert tricky not in shown and repr(tricky)[1:-1] not in shown, shown
    (line,) = read_events(tmp_path / "n.jsonl")
    assert tricky not in str(line) and line["nested"]["deep"][0] == f"pre {REDACTED} post"
    configure_logging(console="off", file_path=None)


def test_an_answer_said_after_a_log_line_comes_after_it_on_the_same_stream(tmp_path):
    """Lines reach the console from the writer thread; `say` (what commands print answers with)
    waits for them, so an error sentence never lands in the middle of the log lines before it."""
    from infra.logging import say

    console = io.StringIO()
    configure_logging(console="plain", file_path=None, stream=console)
    for i in range(20):
        get_logger("cmd").info("cmd.step", n=i)
        say(f"answer {i}", file=console)
    text = console.getvalue()
    for i in range(20):
        assert text.index(f"n={i}") < text.index(f"answer {i}\n"), text
    configure_logging(console="off", file_path=None)


def test_capture_helper_sees_event_names():
    with structlog.testing.capture_logs() as captured:
        get_logger("t").warning("ws.frame_rejected", what="kline frame")
    assert captured == [{"event": "ws.frame_rejected", "what": "kline frame", "log_level": "warning"}]


def test_console_off_without_a_file_prints_nothing(capfd):
    configure_logging(console="off", file_path=None)
    get_logger("quiet").warning("quiet.event", detail="x")
    logging.getLogger("pybit").warning("library warning")
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_lines_are_written_off_the_callers_thread_in_the_order_they_were_logged(tmp_path):
    """The writer thread renders and writes; lines from several threads keep their logging order."""
    import threading

    path = tmp_path / "n.jsonl"
    configure_logging(console="off", file_path=path)
    written_by: set[str] = set()
    file_handler = next(h for h in writer_handlers())
    original = file_handler.emit

    def spy(record):
        written_by.add(threading.current_thread().name)
        original(record)

    file_handler.emit = spy
    order: list[str] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        for i in range(200):
            with lock:  # the order the lines were logged in, as the file must show it
                order.append(f"{name}-{i}")
                get_logger("t").info("order.test", tag=f"{name}-{i}")

    threads = [threading.Thread(target=work, args=(n,), name=f"caller-{n}") for n in "abc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e["tag"] for e in read_events(path)] == order
    assert written_by and not any(n.startswith("caller-") for n in written_by)
    configure_logging(console="off", file_path=None)


def test_reconfiguring_writes_everything_already_logged(tmp_path):
    path = tmp_path / "n.jsonl"
    configure_logging(console="off", file_path=path)
    for i in range(500):
        get_logger("t").info("drain.test", i=i)
    configure_logging(console="off", file_path=None)  # stops the writer: it must drain first
    assert [e["i"] for e in read_events(path)] == list(range(500))


def test_a_process_that_exits_without_shutdown_still_writes_every_line(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    path = tmp_path / "n.jsonl"
    code = ("import sys; from pathlib import Path; from infra.logging import configure_logging, get_logger; "
            f"configure_logging(console='off', file_path=Path({str(path)!r})); "
            "[get_logger('t').info('exit.test', i=i) for i in range(2000)]; sys.exit(0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [e["i"] for e in read_events(path)] == list(range(2000))


def test_exception_is_taken_on_the_callers_thread(tmp_path):
    """`log.exception` renders on the writer thread, where no exception is being handled."""
    path = tmp_path / "n.jsonl"
    configure_logging(console="off", file_path=path)
    try:
        raise ValueError("boom-on-caller")
    except ValueError:
        get_logger("t").exception("caller.failed")
    (line,) = read_events(path)
    assert "ValueError: boom-on-caller" in line["exception"]
    configure_logging(console="off", file_path=None)


def test_scrub_pre_checks_never_let_a_secret_or_signature_through(tmp_path):
    """scrub_text skips each regex when a cheap check says it cannot match; the checks must only
    ever skip lines the regexes would have left alone. Compared with both regexes run on every line."""
    import re

    from infra.logging import _SIGNATURE_RE, register_secrets, scrub_text

    configure_logging(console="off", file_path=None, secrets=[KEY, SECRET])
    secret_re = re.compile("|".join(re.escape(s) for s in sorted({KEY, SECRET}, key=len, reverse=True)))
    lines = [
        '{"event": "risk.allowed", "reason": "entry within every limit", "ts": "2026-12-02T04:22:39.424427Z"}',
        SIGNATURE,
        f"sign={SIGNATURE}&x=1",
        f"\0{SIGNATURE}\0",  # NULs around it: the pre-check's own marker character
        "\0" * 64,
        SIGNATURE + "a",  # 65 hex characters: not a signature, left as it is (the regex's rule)
        f"{SIGNATURE[:63]}-{SIGNATURE}",
        f'{{"k": "{KEY}"}}',
        f"{SECRET} and {SIGNATURE} and {KEY}",
        KEY[:-1],
        "",
    ]
    for line in lines:
        expected = _SIGNATURE_RE.sub(REDACTED, secret_re.sub(REDACTED, line))
        assert scrub_text(line) == expected, line
    assert scrub_text(lines[0]) is lines[0]  # nothing to remove: the line is not copied
    register_secrets(["late-registered-secret"])
    assert scrub_text("x late-registered-secret y") == f"x {REDACTED} y"
    configure_logging(console="off", file_path=None)


def test_a_held_writer_writes_after_the_release_and_never_waits_past_its_bound(tmp_path, monkeypatch):
    import infra.logging as il

    path = tmp_path / "n.jsonl"
    configure_logging(console="off", file_path=path)
    monkeypatch.setattr(il, "HOLD_MAX_S", 30.0)
    il.hold_writer()
    try:
        get_logger("x").info("held.line")
        assert not flush_logging(timeout_s=0.3)  # queued: the writer waits for the release
        assert "held.line" not in path.read_text()
    finally:
        il.release_writer()
    assert flush_logging()
    assert [line["event"] for line in read_events(path)] == ["held.line"]
    monkeypatch.setattr(il, "HOLD_MAX_S", 0.2)
    il.hold_writer()  # never released: the bound lets the line through
    try:
        get_logger("x").info("late.line")
        assert flush_logging(timeout_s=10)
    finally:
        il.release_writer()
    assert [line["event"] for line in read_events(path)] == ["held.line", "late.line"]
    configure_logging(console="off", file_path=None)


def test_line_time_is_the_text_datetime_would_give():
    """`ts` is formatted from the record's float time with a per-second cache: the same text as
    datetime.fromtimestamp(..., utc).isoformat() (Z for +00:00), rounding and carries included."""
    import random
    from datetime import datetime, timezone

    from infra.logging import _utc_iso

    rnd = random.Random(7)
    base = 1_790_000_000.0
    times = [base, base + 0.5e-6, base + 1.5e-6, base + 0.9999995, base + 0.9999996, base + 59.9999999, 1e9 + 0.25]
    times += [base + rnd.random() * 86_400 * 400 for _ in range(20_000)]
    times += [base + 3.0 + rnd.randrange(1_000_000) / 1e6 for _ in range(5_000)]  # whole microseconds, same second
    for t in times:
        expected = datetime.fromtimestamp(t, tz=timezone.utc).isoformat().replace("+00:00", "Z")
        assert _utc_iso(t) == expected, t


def test_the_file_rotates_at_its_size_keeping_the_newest_backups_and_every_recent_line(tmp_path):
    path = tmp_path / "logs" / "node.jsonl"
    configure_logging(console="off", file_path=path, max_bytes=2_000, backups=2)
    try:
        log = get_logger("node")
        for n in range(200):
            log.info("node.metrics", n=n, pad="x" * 40)
        assert flush_logging()
    finally:
        configure_logging(console="off", file_path=None)
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["node.jsonl", "node.jsonl.1", "node.jsonl.2"]  # older ones are gone: the disk is bounded
    # A file holds at most one line past the size (the line that crossed it).
    longest = max(len(line) for line in path.read_text().splitlines(keepends=True))
    assert all((path.parent / f).stat().st_size < 2_000 + longest for f in files)
    # Oldest file first: what is kept is one unbroken run ending at the last line, in order.
    kept = [e["n"] for f in ("node.jsonl.2", "node.jsonl.1", "node.jsonl") for e in read_events(path.parent / f)]
    assert kept == list(range(200 - len(kept), 200)) and len(kept) >= 2 * (2_000 // longest)


def test_rotation_without_a_backup_is_refused(tmp_path):
    with pytest.raises(ValueError, match="backup"):
        configure_logging(console="off", file_path=tmp_path / "node.jsonl", max_bytes=1_000, backups=0)
