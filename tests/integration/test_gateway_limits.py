"""Rate limits and bans against the simulator: the right lane slows, a cancel is never starved."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest

from infra.bybit import IpBanned, Lane, RateLimited, TransientError
from infra.bybit.transport import Endpoints
from messages.account import OrderStatus
from tests.integration.test_gateway_orders import PRICE, make_gateway, resting_buy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

MINUTE = 60_000


def kline_window(sim) -> tuple[int, int]:
    end = sim.clock.now_ms() // MINUTE * MINUTE - MINUTE
    return end - 999 * MINUTE, end


def test_rate_limited_creates_slow_the_order_lane_only(sim, sim_creds):
    """The sim answers 10006 on /v5/order/create (a per-UID endpoint limit)."""
    sim.set_price("BTCUSDT", PRICE)
    gateway = make_gateway(sim, sim_creds)
    try:
        resting = gateway.create_order(resting_buy())
        sim.faults.rate_limit("/v5/order/create", seconds=3)
        asked = time.monotonic()
        with pytest.raises(RateLimited) as info:
            gateway.create_order(resting_buy())
        assert 0 < info.value.retry_after_s <= 3.0
        # A later moment than the venue's reset can only be later still: the bound
        # holds however slow this machine is.
        reset_at = asked + info.value.retry_after_s
        # Not ambiguous: nothing was created, so no lookup is spent.
        assert len(gateway.get_open_orders("BTCUSDT")) == 1
        # The cancel lane is untouched: admitted with no wait at all while the
        # create endpoint is blocked (an admission decision, not a race with
        # the wall clock on a loaded machine).
        gateway.limiter.acquire(Lane.CANCEL, Endpoints.CANCEL.path, timeout_s=0)
        gateway.cancel_order("BTCUSDT", order_id=resting.order_id)
        # The order lane holds its next create until the venue's reset, then it goes through.
        ack = gateway.create_order(resting_buy())
        assert time.monotonic() >= reset_at - 0.05
        assert ack.order_id
    finally:
        gateway.close()


def test_rate_limited_reads_wait_for_the_reset_and_succeed(sim, sim_creds):
    gateway = make_gateway(sim, sim_creds, retry_max_wait_s=Decimal("2"))
    try:
        sim.faults.rate_limit("/v5/account/wallet-balance", seconds=0.6)
        t0 = time.monotonic()
        wallet = gateway.get_wallet()
        assert wallet.total_equity > 0
        assert time.monotonic() - t0 > 0.4
        # Klines (backfill) never shared that budget.
        start, end = kline_window(sim)
        assert len(gateway.fetch_klines("BTCUSDT", "1", start, end)) == 1000
    finally:
        gateway.close()


def test_cancel_during_a_saturating_history_sync_is_admitted_ahead_of_it(sim, sim_creds):
    sim.set_price("BTCUSDT", PRICE)
    # A small IP budget, so four sync threads saturate the backfill share quickly.
    # A generous read timeout: this test is about admission order, not about a
    # loaded machine serving a 1,000-bar page slower than the default 0.5 s.
    gateway = make_gateway(sim, sim_creds, ip_limit_per_5s=60, lane_wait_s=Decimal("1"), rest_timeout_s=Decimal("10"))
    stop = threading.Event()
    pages = []
    errors = []

    def sync():
        start, end = kline_window(sim)
        while not stop.is_set():
            try:
                pages.append(len(gateway.fetch_klines("BTCUSDT", "1", start, end)))
            except RateLimited:
                pass  # our own limiter said "not within a second": the sync would back off and retry
            except TransientError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=sync, name=f"sync-{i}") for i in range(4)]
    try:
        order = gateway.create_order(resting_buy())
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while gateway.stats()["waiting"]["backfill"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gateway.stats()["waiting"]["backfill"] > 0, "the sync never saturated its lane"
        # The cancel lane is admitted at once, with no wait allowed, while backfill
        # requests queue: priority is a decision of the limiter, not a timing.
        gateway.limiter.acquire(Lane.CANCEL, Endpoints.CANCEL.path, timeout_s=0)
        gateway.cancel_order("BTCUSDT", order_id=order.order_id)
        assert gateway.get_order("BTCUSDT", order_id=order.order_id).order_status is OrderStatus.CANCELLED
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        gateway.close()
    assert pages and all(n == 1000 for n in pages)
    assert not errors


def test_http_403_pauses_every_lane_until_the_ban_ends(sim, sim_creds):
    sim.set_price("BTCUSDT", PRICE)
    gateway = make_gateway(sim, sim_creds, ip_ban_pause_s=Decimal("1.5"))
    try:
        order = gateway.create_order(resting_buy())
        start, end = kline_window(sim)
        sim.faults.ip_ban(seconds=1.5)
        with pytest.raises(IpBanned) as info:
            gateway.fetch_klines("BTCUSDT", "1", start, end)
        ban_end = info.value.until_monotonic
        granted = dict(gateway.stats()["granted"])
        calls = {
            Lane.PANIC: lambda: gateway.on_lane(Lane.PANIC).get_position("BTCUSDT"),
            Lane.CANCEL: lambda: gateway.cancel_order("BTCUSDT", order_id=order.order_id),
            Lane.ORDER: lambda: gateway.create_order(resting_buy()),
            Lane.QUERY: lambda: gateway.get_wallet(),
            Lane.BACKFILL: lambda: gateway.fetch_klines("BTCUSDT", "1", start, end),
        }
        for lane, call in calls.items():
            with pytest.raises(IpBanned):
                call()
        assert gateway.stats()["granted"] == granted, "a request was admitted during the ban"
        time.sleep(max(0.0, ban_end - time.monotonic()) + 0.1)
        assert len(gateway.fetch_klines("BTCUSDT", "1", start, end)) == 1000
        gateway.cancel_order("BTCUSDT", order_id=order.order_id)
    finally:
        gateway.close()
