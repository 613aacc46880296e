"""The whole path on a default `run`: example signal -> risk.allowed -> order -> fill, within 150 s."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.helpers import read_events, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(240),
]


def _carries(event: dict, signal_id: str) -> bool:
    return any(v == signal_id or (isinstance(v, str) and signal_id in v) for v in event.values())


def test_default_run_shows_an_example_signal_through_risk_to_a_fill(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYBIT_")}
    env.update({"BYBIT_NODE_DATA_DIR": str(tmp_path / "data"), "BYBIT_NODE_LOG__CONSOLE": "off",
                "NO_PROXY": "127.0.0.1,localhost"})
    log_path = tmp_path / "data" / "logs" / "node.jsonl"
    proc = subprocess.Popen([sys.executable, str(REPO / "main.py"), "run", "--duration", "150"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def path_seen():
            events = read_events(log_path)
            for sig in (e for e in events if e["event"] == "strategy.signal" and e.get("direction") != "flat"):
                sid = sig["signal_id"]
                allowed = any(e["event"] == "risk.allowed" and _carries(e, sid) for e in events)
                filled = any("fill" in e["event"] and e["event"] != "strategy.signal" and _carries(e, sid)
                             for e in events)
                if allowed and filled:
                    return sid
            return None

        wait_until(path_seen, timeout=150, interval=1.0, what="an example signal through risk.allowed to a fill")
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
