"""`python -m infra.sim` serves until interrupted and says where."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from infra.bybit.clients import VenueUrls, make_http
from tests.integration.conftest import sim_credentials

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_cli_serves_until_interrupted():
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra.sim", "--port", "0", "--api-key", "cli-key", "--api-secret", "cli-secret",
         "--seed", "3"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "NO_PROXY": "127.0.0.1,localhost"},
    )
    try:
        deadline = time.monotonic() + 20
        line = ""
        while "sim.started" not in line:
            assert time.monotonic() < deadline, "no sim.started line"
            line = proc.stdout.readline()
            assert line, "the simulator exited early"
        rest = re.search(r"rest='?(http://127\.0\.0\.1:\d+)", line).group(1)
        assert "ws_public" in line and "ws_private" in line and "cli-secret" not in line
        http = make_http(VenueUrls(rest, "", ""), sim_credentials("cli-key", "cli-secret"))
        assert http.get_api_key_information()["result"]["apiKey"] == "cli-key"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
