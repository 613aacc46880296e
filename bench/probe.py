"""One measured piece of work in a fresh process, for figures that need a clean peak RSS.

    python -m bench.probe gaps DB ours|python
    python -m bench.probe sync DB REST_URL START_MS END_MS

Prints one JSON object: `seconds` (the work alone, setup excluded),
`rss_growth_mb` (peak resident memory during the work minus just before,
see `bench/memory.py`), `exact`, and what the work found. A fresh process
so that memory freed (but kept by an allocator) by earlier benchmarks
cannot be reused and hide growth; the setup (imports, the open session,
the HTTP client) is done before the baseline is taken.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import timedelta
from pathlib import Path

from bench.memory import PeakRss
from bench.sim_process import SIM_CREDENTIALS


def _scan(s, how: str) -> int:
    if how == "ours":
        return len(s.gaps("BTCUSDT", "1"))
    # The reviewed design: every timestamp fetched, then a Python loop.
    rows = s.conn.execute(
        "SELECT open_time FROM ohlcv WHERE symbol = ? AND interval = ? ORDER BY open_time", ["BTCUSDT", "1"]
    ).fetchall()
    step = timedelta(minutes=1)
    return len([(a[0], b[0]) for a, b in zip(rows, rows[1:]) if b[0] - a[0] > step])


def _gaps(db: str, how: str, repeats: int = 3) -> dict:
    """The scan in `repeats` fresh sessions (each attach starts with an empty buffer pool, as
    every session of the node does); the median time, and the memory of the first."""
    from infra.store import HistoryStore

    store = HistoryStore(db, owner="bench probe")
    times, peaks, exact, found = [], [], True, set()
    for _ in range(repeats):
        with store.session() as s:
            with PeakRss() as peak:
                started = time.perf_counter()
                found.add(_scan(s, how))
                times.append(time.perf_counter() - started)
            peaks.append(peak.growth_mb)
            exact = exact and peak.exact
    assert len(found) == 1, found
    return {"seconds": sorted(times)[len(times) // 2], "rss_growth_mb": round(max(peaks), 1), "exact": exact,
            "found": found.pop()}


def _sync(db: str, rest: str, start_ms: int, end_ms: int) -> dict:
    from infra.bybit import Gateway
    from infra.bybit.clients import simulator_urls
    from infra.config import ExchangeConfig, TradingMode, Venue
    from infra.logging import configure_logging
    from infra.store import HistoryStore
    from infra.store.sync import HistorySync
    from messages.types import ms_to_utc

    configure_logging(console="off", file_path=Path(db).with_suffix(".jsonl"))
    gateway = Gateway.create(urls=simulator_urls(rest), credentials=SIM_CREDENTIALS, venue=Venue.SIM,
                             trading_mode=TradingMode.PAPER, live_confirmed=False, exchange=ExchangeConfig())
    try:
        sync = HistorySync(HistoryStore(db, owner="bench probe"), gateway)
        with PeakRss() as peak:
            started = time.perf_counter()
            report = sync.sync("BTCUSDT", "1", ms_to_utc(start_ms), ms_to_utc(end_ms))
            seconds = time.perf_counter() - started
    finally:
        gateway.close()
    return {"seconds": seconds, "rss_growth_mb": round(peak.growth_mb, 1), "exact": peak.exact,
            "bars": report.bars_stored}


def main(argv: list[str]) -> int:
    what, *args = argv
    if what == "gaps":
        out = _gaps(args[0], args[1])
    elif what == "sync":
        out = _sync(args[0], args[1], int(args[2]), int(args[3]))
    else:
        raise SystemExit(f"unknown probe {what!r}")
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
