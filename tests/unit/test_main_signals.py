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
