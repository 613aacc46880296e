"""History sync against the simulator in its own process, and a bare pybit client paging the same klines.

    python -m bench sync

* `sync_bars_per_s`: one symbol, interval 1, 10 days (14,400 bars in 15
  pages; 21 rounds) into an empty history file through everything real: pybit over
  loopback HTTP, the gateway (rate limiter, error mapping, ClosedBar
  parsing), `HistorySync` (gap plan, paging, venue-hole ledger) and a
  session per unit of whole pages (up to 10,000 bars) on the DuckDB file,
  the next pages fetched while one unit is stored. Reference `sync_raw_bars_per_s`: a
  bare pybit `HTTP.get_kline` loop paging the same 15 windows (no
  parsing into messages, no store). The two alternate, round by round,
  against one `python -m infra.sim` process (its own interpreter, so its
  work is not counted as ours). -> `sync_ratio`.
* `sync_distant_bars_per_s` (`_raw_`, `_ratio`): the same rounds with the
  simulator holding each kline answer 50 ms, as a venue across a network
  does. Raw pages one request at a time; the sync has two on the wire
  (`infra.store.sync.IN_FLIGHT`), so here the ratio shows what that buys.
  No target: it is not the issue's reference, which is the loopback one.
* `sync_resync_s`: the same sync again, which must find nothing to fetch.
* `sync_cpu_ms` / `sync_raw_cpu_ms`: this process's CPU time for one
  round of each (the same rounds), and their ratio (raw/ours): why the
  wall-time ratio drops when the machine is busy.
* `sync_1m_bars_per_s` / `sync_1m_peak_rss_mb`: a 1,000,000-bar sync
  (1,000 pages) in a fresh process: its throughput, and the peak growth
  of its resident memory (kernel VmHWM: DuckDB's and Arrow's native
  memory included, see bench/memory.py). The sync holds at most two
  units of pages (the one being stored, the one fetched ahead), whatever
  the range; what still grows with the file is DuckDB's own memory for it
  (20k bars: ~64 MB, 300k: ~121 MB, 1M: ~155 MB, as before units).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.compare import Comparison, alternate, record
from bench.sim_process import REPO, SIM_CREDENTIALS, SimControl, sim_process
from infra.bybit import Gateway
from infra.bybit.clients import make_http, simulator_urls
from infra.config import ExchangeConfig, TradingMode, Venue
from infra.logging import configure_logging
from infra.store import HistoryStore
from infra.store.sync import PAGE_LIMIT, HistorySync
from messages.types import ms_to_utc

DAYS = 10
MINUTE = 60_000
DISTANT_DELAY_S = 0.05
BIG = 1_000_000

TARGETS = {"sync_ratio": (">=", 0.7)}


def _windows(start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    """Newest first, at most PAGE_LIMIT one-minute bars each, inclusive open-time bounds (as the sync pages)."""
    out, last = [], end_ms - MINUTE
    while last >= start_ms:
        first = max(start_ms, last - (PAGE_LIMIT - 1) * MINUTE)
        out.append((first, last))
        last = first - MINUTE
    return out


def run(big: bool = True) -> dict[str, float]:
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench_sync_") as tmp_name, sim_process() as rest:
        tmp = Path(tmp_name)
        configure_logging(console="off", file_path=tmp / "bench.jsonl")
        end_ms = (int(time.time() * 1000) // MINUTE - 24 * 60) * MINUTE
        out.update(_ratio(tmp, rest, end_ms))
        out.update(_distant(tmp, rest, end_ms))
        if big:
            out.update(_big(tmp, rest, end_ms))
    return out


def _distant(tmp: Path, rest: str, end_ms: int) -> dict[str, float]:
    """The same rounds against a venue 50 ms away (the simulator holds each kline answer that
    long): what the sync's two requests in flight are for. Raw pages one request at a time."""
    venue = SimControl(rest)
    venue.fault("delay_responses", seconds=DISTANT_DELAY_S, path="/v5/market/kline")
    try:
        return _ratio(tmp, rest, end_ms, prefix="sync_distant", rounds=7, warmup=1, details=False)
    finally:
        venue.fault("clear")
        venue.close()


def _ratio(tmp: Path, rest: str, end_ms: int, prefix: str = "sync", rounds: int = 21,
           warmup: int = 2, details: bool = True) -> dict[str, float]:
    """Raw and ours alternated; with `details`, also the resync time and both sides' CPU."""
    out: dict[str, float] = {}
    urls = simulator_urls(rest)
    gateway = Gateway.create(urls=urls, credentials=SIM_CREDENTIALS, venue=Venue.SIM,
                             trading_mode=TradingMode.PAPER, live_confirmed=False, exchange=ExchangeConfig())
    http = make_http(urls, None)
    # Closed, settled minutes (a day back from now), so every window is full and none is "unpublished".
    start_ms = end_ms - DAYS * 1440 * MINUTE
    windows = _windows(start_ms, end_ms)
    numbers = iter(range(1000))
    try:
        def raw() -> float:
            cpu = time.process_time()
            started = time.perf_counter()
            got = 0
            for first, last in windows:
                answer = http.get_kline(category="linear", symbol="BTCUSDT", interval="1", start=first, end=last,
                                        limit=PAGE_LIMIT)
                got += len(answer["result"]["list"])
            elapsed = time.perf_counter() - started
            raw_cpu.append(time.process_time() - cpu)
            assert got == DAYS * 1440, got
            return elapsed

        def ours() -> float:
            store = HistoryStore(tmp / f"{prefix}{next(numbers)}.duckdb", owner="bench")
            sync = HistorySync(store, gateway)
            cpu = time.process_time()
            started = time.perf_counter()
            report = sync.sync("BTCUSDT", "1", ms_to_utc(start_ms), ms_to_utc(end_ms))
            elapsed = time.perf_counter() - started
            ours_cpu.append(time.process_time() - cpu)
            assert report.ok and report.bars_stored == DAYS * 1440 and report.requests == len(windows), report
            started = time.perf_counter()
            again = sync.sync("BTCUSDT", "1", ms_to_utc(start_ms), ms_to_utc(end_ms))
            resync.append(time.perf_counter() - started)
            assert again.requests == 0
            store.close()
            return elapsed

        resync: list[float] = []
        raw_cpu: list[float] = []
        ours_cpu: list[float] = []
        cmp = alternate(raw=raw, ours=ours, rounds=rounds, warmup=warmup)
        figures = cmp.throughput(f"{prefix}_bars_per_s", f"{prefix}_raw_bars_per_s", DAYS * 1440)
        out[f"{prefix}_ratio"] = figures.pop(f"{prefix}_bars_per_s_ratio")
        out.update(figures)
        record(f"{prefix}_bars_per_s", f"{prefix}_raw_bars_per_s", f"{prefix}_ratio")
        if details:
            out["sync_resync_s"] = round(sorted(resync)[len(resync) // 2], 4)
            # This process's CPU time per round, of the same rounds: on a busy machine the wall-time
            # ratio follows how much CPU each side needs (the simulator's included in both).
            cpu = Comparison(tuple(raw_cpu[warmup:]), tuple(ours_cpu[warmup:]))
            out.update(cpu.latency("sync_cpu_ms", "sync_raw_cpu_ms", unit_s=1e-3, digits=1))
    finally:
        gateway.close()
    return out


def _big(tmp: Path, rest: str, end_ms: int) -> dict[str, float]:
    out: dict[str, float] = {}
    big_end = end_ms
    big_start = big_end - BIG * MINUTE
    done = subprocess.run(
        [sys.executable, "-m", "bench.probe", "sync", str(tmp / "big.duckdb"), rest, str(big_start), str(big_end)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the 1M-bar sync failed:\n{done.stderr}")
    big = json.loads(done.stdout.strip().splitlines()[-1])
    assert big["bars"] == BIG, big
    out["sync_1m_bars_per_s"] = round(BIG / big["seconds"])
    out["sync_1m_peak_rss_mb"] = big["rss_growth_mb"]
    record("sync_1m_bars_per_s")
    record("sync_1m_peak_rss_mb")
    return out


if __name__ == "__main__":
    for key, value in run().items():
        print(key, value)
