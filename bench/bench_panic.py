"""Panic to verified flat while the venue refuses 30 % of requests.

    python -m bench panic

* `panic_flat_s`: three positions (BTC, ETH, SOL), each with TP/SL on the
  venue, and one resting order; the simulator answers each private REST
  request with 10006 "Too many visits" with probability 0.3. Timed from
  the panic command to the REST read that verified every position at size 0
  and no order open (`actors.closing.Flattener` on the gateway's panic lane:
  DCP tightened, closes first and in parallel, stops cancelled only after
  each fill, the rest cancelled, verified). Target <= 5 s. Median of the rounds.
* `panic_flat_raw_s`: the same work with pybit alone, the way a script
  would: per symbol read the position, send the reduce-only close, cancel
  all, then read back, every call repeated on 10006 after the reset time.
  Timed alternately with ours in the same run; `panic_flat_s_ratio` is
  raw / ours (above 1: ours is faster).
* `panic_flat_max_s`: the slowest of our rounds.

The simulator runs in its own process (bench/sim_process.py), so its work
answering the requests is not counted as ours or the reference's; its
switches and prices are set over loopback HTTP, outside the timed part.
"""

from __future__ import annotations

import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

from pybit.exceptions import FailedRequestError, InvalidRequestError

from actors.closing import ClosePolicy, Flattener
from bench.compare import alternate, record
from bench.sim_process import SIM_CREDENTIALS, SimControl, sim_process
from infra.bybit import Gateway, Lane, OrderRequest, OrderType, new_order_link_id
from infra.bybit.clients import make_http
from infra.config import ExchangeConfig, TradingMode, Venue
from infra.logging import configure_logging
from messages.types import Side

PRICES = {"BTCUSDT": Decimal("60000"), "ETHUSDT": Decimal("3000"), "SOLUSDT": Decimal("1.2")}
QTY = {"BTCUSDT": Decimal("0.01"), "ETHUSDT": Decimal("0.1"), "SOLUSDT": Decimal("10")}
REFUSE_SHARE = 0.3
RESET_MS = 100
ROUNDS = 7
TARGETS = {"panic_flat_s": ("<=", 5.0)}


def _setup(sim: SimControl, gateway: Gateway) -> None:
    """Three positions with TP/SL and one resting order, with the venue healthy and prices reset
    (the simulator's clock is wall time: its prices wander between rounds)."""
    sim.fault("clear")
    for symbol, price in PRICES.items():
        sim.set_price(symbol, price)
    time.sleep(1.1)  # untimed: let the venue's 1-second endpoint windows of the previous round pass
    for symbol, side in (("BTCUSDT", Side.BUY), ("ETHUSDT", Side.SELL), ("SOLUSDT", Side.BUY)):
        price = PRICES[symbol]
        up, down = price * Decimal("1.05"), price * Decimal("0.95")
        gateway.create_order(OrderRequest(
            symbol=symbol, side=side, order_type=OrderType.MARKET, qty=QTY[symbol], reference_price=price,
            order_link_id=new_order_link_id("b"),
            take_profit=up if side is Side.BUY else down, stop_loss=down if side is Side.BUY else up,
        ))
    gateway.create_order(OrderRequest(symbol="BTCUSDT", side=Side.BUY, order_type=OrderType.LIMIT, qty=Decimal("0.01"),
                                      price=Decimal("57000"), order_link_id=new_order_link_id("b")))


def _assert_flat(gateway: Gateway, who: str) -> None:
    open_positions = [s for s in PRICES if gateway.get_position(s).is_open]
    orders = gateway.get_open_orders()
    assert not open_positions and not orders, f"{who} left {open_positions} and {len(orders)} orders"


def _until_ok(call: Callable[[], Any]) -> Any:
    """What a script does without a gateway: repeat a rate-limited call after the venue's reset."""
    while True:
        try:
            return call()
        except (InvalidRequestError, FailedRequestError) as exc:
            if getattr(exc, "status_code", None) == 10006 or "10006" in str(exc) or "Too many visits" in str(exc):
                time.sleep(RESET_MS / 1000)
                continue
            raise


def _raw_panic(http: Any) -> None:
    for symbol in PRICES:
        rows = _until_ok(lambda: http.get_positions(category="linear", symbol=symbol))["result"]["list"]
        row = rows[0]
        if Decimal(row["size"]) > 0:
            side = "Sell" if row["side"] == "Buy" else "Buy"
            _until_ok(lambda: http.place_order(category="linear", symbol=symbol, side=side, orderType="Market",
                                               qty=row["size"], reduceOnly=True, orderLinkId=new_order_link_id("r")))
        _until_ok(lambda: http.cancel_all_orders(category="linear", symbol=symbol))
    for symbol in PRICES:
        row = _until_ok(lambda: http.get_positions(category="linear", symbol=symbol))["result"]["list"][0]
        assert Decimal(row["size"]) == 0
    assert _until_ok(lambda: http.get_open_orders(category="linear", settleCoin="USDT"))["result"]["list"] == []


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench_panic_") as tmp, \
            sim_process(extra_args=["--symbols", ",".join(PRICES)]) as rest:
        configure_logging(console="off", file_path=Path(tmp) / "bench.jsonl")
        sim = SimControl(rest)
        urls = sim.urls
        gateway = Gateway.create(urls=urls, credentials=SIM_CREDENTIALS, venue=Venue.SIM,
                                 trading_mode=TradingMode.PAPER, live_confirmed=False, exchange=ExchangeConfig())
        # pybit replaces an empty retry_codes with its own (10006 included): name one that never occurs.
        http = make_http(urls, SIM_CREDENTIALS, max_retries=1, retry_codes={-2_147_483_648}, retry_delay=0)
        policy = ClosePolicy(attempts=8, deadline_s=10, fill_timeout_s=3)
        panic_lane = gateway.on_lane(Lane.PANIC)
        seed = iter(range(1, 1000))
        not_flat: list[str] = []

        def timed(procedure: Callable[[], Any], who: str) -> float:
            _setup(sim, gateway)
            sim.fault("rate_limit_randomly", probability=REFUSE_SHARE, reset_ms=RESET_MS, seed=next(seed))
            started = time.perf_counter()
            procedure()
            elapsed = time.perf_counter() - started
            sim.fault("clear")
            _assert_flat(gateway, who)
            return elapsed

        def ours() -> float:
            def procedure() -> None:
                report = Flattener(panic_lane, list(PRICES), policy, deadline_s=30).run("bench")
                if not report.flat:
                    not_flat.append(str(report.still_open_positions + report.still_open_orders))
            return timed(procedure, "ours")

        try:
            cmp = alternate(raw=lambda: timed(lambda: _raw_panic(http), "raw"), ours=ours, rounds=ROUNDS)
        finally:
            gateway.close()
            sim.close()
        assert not not_flat, f"a panic ended not flat: {not_flat}"
        record("panic_flat_s", "panic_flat_raw_s", "panic_flat_s_ratio")
        record("panic_flat_max_s")
        return {
            "panic_flat_s": round(cmp.ours_median_s, 3),
            "panic_flat_max_s": round(max(cmp.ours_s), 3),
            "panic_flat_raw_s": round(cmp.raw_median_s, 3),
            "panic_flat_s_ratio": round(cmp.raw_median_s / cmp.ours_median_s, 3),
        }


if __name__ == "__main__":
    print(run())
