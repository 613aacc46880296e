"""History sync throughput: simulator -> pybit -> gateway backfill lane -> DuckDB.

    python -m bench sync

* `sync_bars_per_s`: one symbol, interval 1, 30 days (43,200 bars in 44
  pages) into an empty history file, everything real: the loopback
  simulator, pybit over HTTP, the gateway's rate limiter, page-by-page
  sessions on the DuckDB file.
* `sync_resync_s`: the same sync again, which must find nothing to fetch.
"""

from __future__ import annotations

import tempfile
import time
from datetime import timedelta
from pathlib import Path

from infra.bybit import Gateway
from infra.config import ExchangeConfig, TradingMode, Venue, load_config
from infra.logging import configure_logging
from infra.sim import ManualClock, Simulator
from infra.store import HistoryStore
from infra.store.sync import HistorySync
from messages.types import ms_to_utc

DAYS = 30


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench_sync_") as tmp:
        configure_logging(console="off", file_path=Path(tmp) / "bench.jsonl")
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text(f"data_dir: {Path(tmp) / 'data'}\n")
        app = load_config(cfg)
        sim = Simulator.from_config(app.node, clock=ManualClock())
        urls = sim.start()
        gateway = Gateway.create(urls=urls, credentials=app.credentials, venue=Venue.SIM,
                                 trading_mode=TradingMode.PAPER, live_confirmed=False, exchange=ExchangeConfig())
        try:
            store = HistoryStore.for_node(app.node, owner="bench")
            sync = HistorySync(store, gateway, now_ms=sim.clock.now_ms)
            end = ms_to_utc(sim.clock.now_ms())
            start = end - timedelta(days=DAYS)
            started = time.perf_counter()
            report = sync.sync("BTCUSDT", "1", start, end)
            elapsed = time.perf_counter() - started
            assert report.ok and report.bars_stored == DAYS * 1440, report
            started = time.perf_counter()
            again = sync.sync("BTCUSDT", "1", start, end)
            resync = time.perf_counter() - started
            assert again.requests == 0
        finally:
            gateway.close()
            sim.stop()
    return {"sync_bars_per_s": round(report.bars_stored / elapsed), "sync_resync_s": round(resync, 4)}


if __name__ == "__main__":
    for key, value in run().items():
        print(key, value)
