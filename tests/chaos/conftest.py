"""Chaos runs: seeds from CHAOS_SEEDS (default: a short form for `make test`), a table at the end.

    make chaos SEEDS=20            # seeds 1..20, longer runs, table of results
    CHAOS_SEEDS=17 make chaos      # one seed again
"""

from __future__ import annotations

import os

OUTCOMES: list = []


def seeds() -> list[int]:
    raw = os.environ.get("CHAOS_SEEDS", "")
    if raw.strip():
        return [int(s) for s in raw.replace(",", " ").split()]
    return [1, 2]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not OUTCOMES:
        return
    tr = terminalreporter
    tr.section("chaos runs")
    names = sorted({k for o in OUTCOMES for k in o.held})
    tr.write_line(f"{'seed':>6} {'faults':>6} {'restarts':>8} {'escal.':>6}  " + " ".join(f"{n:>10}" for n in names))
    for o in sorted(OUTCOMES, key=lambda o: o.seed):
        cells = " ".join(f"{('ok' if o.held.get(n) else ('FAIL' if n in o.held else '-')):>10}" for n in names)
        tr.write_line(f"{o.seed:>6} {len(o.faults):>6} {o.restarts:>8} {o.escalations:>6}  {cells}")
    for o in OUTCOMES:
        for p in o.problems:
            tr.write_line(f"seed {o.seed}: {p}")


# The simulator fixtures the integration tests use.
from tests.integration.conftest import sim_factory  # noqa: E402,F401
