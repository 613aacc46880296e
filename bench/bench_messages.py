"""Message parsing and actor mailbox throughput: the cost floor of every WebSocket callback.

    python -m bench messages

* `kline_parse_us`: one closed-bar kline frame, as pybit hands it over
  (JSON text decoded by `json.loads`), into the node's messages:
  `Kline.from_bybit(frame)` and `.closed_bar()` (what the public router
  does per closed bar). Reference `kline_parse_raw_us`: the same
  `json.loads`, then one plain pydantic model with the same fields and
  types (Decimal prices, UTC datetimes, no validators), built from the
  frame's data. Timed in 61 alternating rounds of 500 frames, in the
  thread's CPU time (`time.thread_time`: waiting for a core on a busy
  machine is not parsing).
  -> `kline_parse_ratio` (reference time / ours: 1.0 is "as cheap as a
  plain model").
* `actor_tell_msgs_per_s`: 3,000 tells (31 alternating rounds) to a Pykka actor until the last is
  handled. Reference: a bare `queue.Queue` and a thread doing the same.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from datetime import datetime
from decimal import Decimal

import pykka
from pydantic import BaseModel, ConfigDict, Field

from bench.compare import alternate, record
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
_TEXT = json.dumps(_FRAME)
FRAMES = 500


class PlainKline(BaseModel):
    """The reference: the same fields and types as a Bybit kline, nothing checked beyond the types."""

    model_config = ConfigDict(frozen=True)
    symbol: str
    interval: str
    start: datetime
    end: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    turnover: Decimal
    confirm: bool
    ts: datetime = Field(alias="timestamp")


def _parse_rounds() -> dict[str, float]:
    def ours() -> float:
        started = time.thread_time()
        for _ in range(FRAMES):
            Kline.from_bybit(json.loads(_TEXT))[0].closed_bar()
        return time.thread_time() - started

    def raw() -> float:
        started = time.thread_time()
        for _ in range(FRAMES):
            frame = json.loads(_TEXT)
            symbol = frame["topic"].rsplit(".", 1)[1]
            for item in frame["data"]:
                PlainKline.model_validate({**item, "symbol": symbol})
        return time.thread_time() - started

    figures = alternate(raw=raw, ours=ours, rounds=61, warmup=2).latency(
        "kline_parse_us", "kline_parse_raw_us", units_per_round=FRAMES, unit_s=1e-6, digits=2)
    out = {"kline_parse_ratio": figures.pop("kline_parse_us_ratio"), **figures}
    record("kline_parse_us", "kline_parse_raw_us", "kline_parse_ratio")
    return out


class _Sink(pykka.ThreadingActor):
    use_daemon_thread = True

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def on_receive(self, message):
        self.count += 1
        return self.count


def _tell_rounds(n: int = 3_000) -> dict[str, float]:
    def ours() -> float:
        sink = _Sink.start()
        try:
            started = time.perf_counter()
            for _ in range(n):
                sink.tell(_FRAME)
            sink.ask("done", timeout=30)
            return time.perf_counter() - started
        finally:
            sink.stop()

    def raw() -> float:
        inbox: queue.Queue = queue.Queue()
        done = threading.Event()

        def consume() -> None:
            count = 0
            while (item := inbox.get()) is not None:
                count += 1
            done.set()

        worker = threading.Thread(target=consume, daemon=True)
        worker.start()
        started = time.perf_counter()
        for _ in range(n):
            inbox.put(_FRAME)
        inbox.put(None)
        done.wait(30)
        elapsed = time.perf_counter() - started
        worker.join(5)
        return elapsed

    return alternate(raw=raw, ours=ours, rounds=31, warmup=2).throughput("actor_tell_msgs_per_s", "queue_put_msgs_per_s", n)


def run() -> dict[str, float]:
    return {**_parse_rounds(), **_tell_rounds()}


if __name__ == "__main__":
    for key, value in run().items():
        print(key, value)
