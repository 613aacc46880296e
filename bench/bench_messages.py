"""Message parsing and actor mailbox throughput: the cost floor of every WebSocket callback."""

from __future__ import annotations

import statistics
import time

import pykka

from messages.market import Kline

_FRAME = {
    "topic": "kline.1.BTCUSDT",
    "type": "snapshot",
    "ts": 1672324988882,
    "data": [
        {
            "start": 1672324800000,
            "end": 1672324859999,
            "interval": "1",
            "open": "16649.5",
            "close": "16677",
            "high": "16677",
            "low": "16608",
            "volume": "2.081",
            "turnover": "34666.4005",
            "confirm": True,
            "timestamp": 1672324988882,
        }
    ],
}


class _Sink(pykka.ThreadingActor):
    use_daemon_thread = True

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def on_receive(self, message):
        self.count += 1
        return self.count


def run() -> dict[str, float]:
    n = 20_000
    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        Kline.from_bybit(_FRAME)[0].closed_bar()
        samples.append(time.perf_counter_ns() - t0)
    samples.sort()
    sink = _Sink.start()
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            sink.tell(_FRAME)
        sink.ask("done", timeout=30)
        tell_rate = n / (time.perf_counter() - t0)
    finally:
        sink.stop()
    return {
        "kline_parse_p50_us": round(statistics.median(samples) / 1000, 2),
        "kline_parse_p99_us": round(samples[int(n * 0.99)] / 1000, 2),
        "actor_tell_msgs_per_s": round(tell_rate),
    }
