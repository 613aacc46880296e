"""`python main.py status` as an operator runs it, against a real node process on the simulator."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from decimal import Decimal

import pytest

from tests.conftest import REPO
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(90)


def _env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYBIT_")}
    env.update(BYBIT_NODE_DATA_DIR=str(tmp_path / "data"), BYBIT_NODE_LOG__CONSOLE="off",
               BYBIT_NODE_SYMBOLS='{"BTCUSDT": {"intervals": ["1"]}}')
    return env


def _status(tmp_path, *args):
    return subprocess.run([sys.executable, str(REPO / "main.py"), "status", *args], cwd=REPO, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=30)


def test_status_with_no_node_exits_1_with_one_clear_sentence(tmp_path):
    done = _status(tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == f"No node is running for venue sim with data directory {tmp_path / 'data'}."


def test_status_of_a_running_node_shows_ready_then_nothing_once_it_stopped(tmp_path):
    node = subprocess.Popen([sys.executable, str(REPO / "main.py"), "run", "--duration", "60"], cwd=REPO,
                            env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def ready():
            done = _status(tmp_path, "--json")
            return done.returncode == 0 and json.loads(done.stdout).get("ready") is True and json.loads(done.stdout)

        status = wait_until(ready, timeout=45, interval=0.5, what="status --json says ready")
        assert status["venue"] == "sim" and status["pid"] == node.pid and status["status_age_s"] < 5
        assert status["streams"]["tickers.BTCUSDT"]["stale"] is False and status["wallet"]["total_equity_usd"]
        human = _status(tmp_path)
        assert human.returncode == 0, human.stderr
        assert "venue sim" in human.stdout and "ready           yes" in human.stdout
        # The human table shows the same equity the JSON has (the example strategy may have traded).
        equity = status["wallet"]["total_equity_usd"]
        assert "tickers.BTCUSDT" in human.stdout and re.search(r"wallet equity\s+\d+(\.\d+)? USD", human.stdout)
        assert Decimal(re.search(r"wallet equity\s+(\S+)", human.stdout).group(1)) == pytest.approx(Decimal(str(equity)), abs=Decimal("50"))
    finally:
        node.send_signal(signal.SIGINT)
        node.communicate(timeout=30)
    assert node.returncode == 0
    after = _status(tmp_path)
    assert after.returncode == 1 and "No node is running" in after.stderr
