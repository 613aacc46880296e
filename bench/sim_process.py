"""The simulator in its own process, as a benchmark's venue.

In-process, the simulator shares the interpreter lock with the code it
serves, so every figure measured against it would count its work as ours.
`python -m infra.sim` on 127.0.0.1 is what a separate venue looks like.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator, Sequence

import requests
from pydantic import SecretStr

from infra.bybit.clients import VenueUrls, simulator_urls
from infra.config import Credentials

REPO = Path(__file__).resolve().parent.parent
SIM_KEY, SIM_SECRET = "sim-api-key", "sim-api-secret"
SIM_CREDENTIALS = Credentials(api_key=SecretStr(SIM_KEY), api_secret=SecretStr(SIM_SECRET), source="simulator")
_REST = re.compile(r"rest='?(http://127\.0\.0\.1:\d+)")


@contextmanager
def sim_process(timeout_s: float = 30.0, extra_args: Sequence[str] = ()) -> Iterator[str]:
    """Start `python -m infra.sim` on a free loopback port; yield its REST URL; stop it.
    `extra_args` go to the simulator's command line (e.g. `--symbols A,B,C`)."""
    with tempfile.TemporaryDirectory(prefix="bench_sim_") as tmp:
        log = Path(tmp) / "sim.log"
        with open(log, "w") as out:  # a file, not a pipe: a full pipe would stall the simulator
            proc = subprocess.Popen(
                [sys.executable, "-m", "infra.sim", "--port", "0", "--api-key", SIM_KEY, "--api-secret", SIM_SECRET,
                 *extra_args],
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT, text=True,
                env={**os.environ, "NO_PROXY": "127.0.0.1,localhost"},
            )
        try:
            deadline = time.monotonic() + timeout_s
            while (match := _REST.search(log.read_text())) is None:
                if proc.poll() is not None:
                    raise RuntimeError(f"the simulator exited early:\n{log.read_text()}")
                if time.monotonic() > deadline:
                    raise RuntimeError("the simulator did not say where it listens")
                time.sleep(0.05)
            yield match.group(1)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class SimControl:
    """A simulator process: its URLs, and its fault switches and price lever over loopback HTTP."""

    def __init__(self, rest: str) -> None:
        self._rest = rest.rstrip("/")
        self.urls: VenueUrls = simulator_urls(rest)
        self._http = requests.Session()
        self._http.trust_env = False  # a proxy variable must not route loopback traffic away

    def fault(self, name: str, **kwargs: Any) -> Any:
        answer = self._http.post(f"{self._rest}/sim/fault/{name}", json=kwargs, timeout=10)
        answer.raise_for_status()
        return answer.json().get("result")

    def set_price(self, symbol: str, price: Decimal) -> None:
        self._http.post(f"{self._rest}/sim/price", json={"symbol": symbol, "price": str(price)},
                        timeout=10).raise_for_status()

    def close(self) -> None:
        self._http.close()
