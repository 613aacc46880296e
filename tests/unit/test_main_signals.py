"""main.py's signal handling: the first signal starts a graceful stop, a second Ctrl-C forces the exit."""

from __future__ import annotations

import json
import os
import signal

import pytest

import main


@pytest.fixture
def handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def test_first_signal_requests_stop_second_ctrl_c_forces_exit(handlers, monkeypatch, tmp_path):
    exits = []
    monkeypatch.setattr(main.os, "_exit", exits.append)
    log = tmp_path / "node.jsonl"
    stop = main.StopRequest(forced_log=log)
    main._install_signal_handlers(stop)

    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.wait(5) == "SIGTERM" and exits == []

    os.kill(os.getpid(), signal.SIGTERM)  # a repeated SIGTERM is not a forced exit
    assert exits == []

    os.kill(os.getpid(), signal.SIGINT)
    assert exits == [main.EXIT_FORCED]
    assert stop.reason == "SIGTERM"  # the first reason is kept
    (line,) = log.read_text().splitlines()
    assert json.loads(line)["event"] == "node.forced_exit" and json.loads(line)["signal"] == "SIGINT"


def test_wait_returns_duration_when_no_signal_comes():
    assert main.StopRequest().wait(0.1) == "duration"


def test_a_ctrl_c_that_duckdb_reported_as_its_own_error_is_an_interrupt():
    """Ctrl-C while DuckDB reads a registered Arrow table comes back as InvalidInputException
    with only the text 'KeyboardInterrupt' in it: that is an interrupt (exit 130), not a bug."""
    import duckdb

    from infra.store import StoreError

    arrow_read = duckdb.InvalidInputException(
        "Invalid Input Error: reading the schema of the object registered as 'incoming_bars' failed: KeyboardInterrupt: ")
    assert main._interrupted(arrow_read, duckdb)
    assert main._interrupted(duckdb.InterruptException("INTERRUPT Error: Interrupted!"), duckdb)
    try:
        try:
            raise duckdb.InterruptException("INTERRUPT Error: Interrupted!")
        except duckdb.InterruptException as exc:
            raise StoreError("the write failed") from exc
    except StoreError as wrapped:
        assert main._interrupted(wrapped, duckdb)
    assert not main._interrupted(duckdb.InvalidInputException("Invalid Input Error: bad column"), duckdb)
    assert not main._interrupted(StoreError("disk full"), duckdb)
