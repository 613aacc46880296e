"""main.py's signal handling: the first signal starts a graceful stop, a second Ctrl-C forces the exit."""

from __future__ import annotations

import os
import signal
import threading

import pytest

import main
from infra.logging import get_logger


@pytest.fixture
def handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def test_first_signal_requests_stop_second_ctrl_c_forces_exit(handlers, monkeypatch):
    exits = []
    monkeypatch.setattr(main.os, "_exit", exits.append)
    stop, reason = threading.Event(), {"why": "duration"}
    main._install_signal_handlers(stop, reason, get_logger("test"))

    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.wait(5) and reason["why"] == "SIGTERM" and exits == []

    os.kill(os.getpid(), signal.SIGTERM)  # a repeated SIGTERM is not a forced exit
    assert exits == []

    os.kill(os.getpid(), signal.SIGINT)
    assert exits == [main.EXIT_FORCED]
    assert reason["why"] == "SIGTERM"  # the first reason is kept
