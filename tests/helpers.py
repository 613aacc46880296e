"""Small test helpers: waiting with a deadline instead of sleeping and hoping."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01, what: str = "") -> Any:
    """Poll `predicate` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate!r}")
        pause.wait(interval)


def read_events(path: Path) -> list[dict]:
    """The JSON log as a list of dicts (missing file: empty).

    Lines this process logged are written by the logging writer thread:
    wait for it first, so an event logged before the call is in the answer.
    """
    from infra.logging import flush_logging

    flush_logging()
    if not path.exists():
        return []
    out = []
    # Only complete lines: another process (a node under test) may be half-way through writing the last.
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]
    for line in lines:
        if line.strip():
            out.append(json.loads(line))
    return out
