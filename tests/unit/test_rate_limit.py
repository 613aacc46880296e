"""The rate limiter alone: lanes, reserves, priority among waiters, bans, venue headers.

Real threads and the real monotonic clock, with short windows so that a
saturated window frees up within a fraction of a second.
"""

from __future__ import annotations

import threading
import time

import pytest

from infra.bybit.errors import IpBanned, RateLimited
from infra.bybit.rate_limit import IP_RESERVE, Lane, LimitHeaders, RateLimiter

pytestmark = pytest.mark.timeout(20)


def _fill(limiter: RateLimiter, lane: Lane, endpoint: str = "/e") -> int:
    """Acquire on `lane` until the limiter refuses at once; returns how many went."""
    n = 0
    while True:
        try:
            limiter.acquire(lane, endpoint, timeout_s=0)
        except RateLimited:
            return n
        n += 1


def test_backfill_leaves_its_reserve_to_higher_lanes():
    limiter = RateLimiter(ip_limit=20, window_s=30)
    got = _fill(limiter, Lane.BACKFILL)
    assert got == int(20 * (1 - IP_RESERVE[Lane.BACKFILL])) == 12
    # The reserve is there for the lanes above: a cancel goes at once (timeout 0: no waiting allowed).
    limiter.acquire(Lane.CANCEL, "/v5/order/cancel", timeout_s=0)
    assert _fill(limiter, Lane.QUERY) == int(20 * (1 - IP_RESERVE[Lane.QUERY])) - 13
    assert _fill(limiter, Lane.CANCEL) == 20 - 16


def test_refusal_says_how_long_to_wait():
    limiter = RateLimiter(ip_limit=10, window_s=0.5)
    _fill(limiter, Lane.CANCEL)
    with pytest.raises(RateLimited) as info:
        limiter.acquire(Lane.CANCEL, "/e", timeout_s=0)
    assert 0 < info.value.retry_after_s <= 0.5


def test_a_waiting_request_goes_when_the_window_slides():
    limiter = RateLimiter(ip_limit=10, window_s=0.4)
    _fill(limiter, Lane.CANCEL)
    started = time.monotonic()
    limiter.acquire(Lane.CANCEL, "/e", timeout_s=5)
    waited = time.monotonic() - started
    assert 0.2 < waited < 1.5


def test_cancel_is_never_starved_by_a_backfill_flood():
    limiter = RateLimiter(ip_limit=20, window_s=0.5)
    stop = threading.Event()
    backfill_grants = []

    def flood():
        while not stop.is_set():
            try:
                limiter.acquire(Lane.BACKFILL, "/v5/market/kline", timeout_s=0.2)
                backfill_grants.append(time.monotonic())
            except RateLimited:
                pass

    threads = [threading.Thread(target=flood) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 5
        while len(backfill_grants) < 30 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(backfill_grants) >= 30, "the flood never saturated the window"
        latencies = []
        for _ in range(5):
            started = time.monotonic()
            limiter.acquire(Lane.CANCEL, "/v5/order/cancel", timeout_s=1)
            latencies.append(time.monotonic() - started)
            time.sleep(0.05)
        assert max(latencies) < 0.25, latencies  # the window is 0.5 s: without the reserve a cancel waits for it
    finally:
        stop.set()
        for t in threads:
            t.join()


def test_waiters_are_served_by_priority():
    limiter = RateLimiter(ip_limit=10, window_s=0.6)
    _fill(limiter, Lane.PANIC)
    order: list[Lane] = []
    lock = threading.Lock()
    ready = threading.Barrier(4)

    def wait_on(lane: Lane):
        ready.wait()
        # Stagger so the lower lanes are queued first.
        time.sleep({Lane.BACKFILL: 0.0, Lane.QUERY: 0.05, Lane.ORDER: 0.1, Lane.CANCEL: 0.15}[lane])
        limiter.acquire(lane, f"/{lane.name}", timeout_s=5)
        with lock:
            order.append(lane)

    threads = [threading.Thread(target=wait_on, args=(lane,)) for lane in (Lane.BACKFILL, Lane.QUERY, Lane.ORDER, Lane.CANCEL)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # The whole window frees at once; the cancel queued last still goes first.
    assert order[0] is Lane.CANCEL
    assert order == sorted(order)


def test_ip_ban_stops_every_lane_until_it_ends():
    limiter = RateLimiter(ip_limit=100, window_s=5)
    until = limiter.ban(0.3)
    for lane in Lane:
        with pytest.raises(IpBanned) as info:
            limiter.acquire(lane, "/any", timeout_s=5)
        assert info.value.until_monotonic == until
    assert limiter.ban_remaining_s() > 0
    time.sleep(max(0.0, until - time.monotonic()) + 0.01)
    for lane in Lane:
        limiter.acquire(lane, "/any", timeout_s=0)


def test_a_10006_pauses_that_endpoint_for_every_lane_only():
    limiter = RateLimiter(ip_limit=100, window_s=5)
    limiter.rate_limited("/v5/order/create", 0.3)
    with pytest.raises(RateLimited):
        limiter.acquire(Lane.PANIC, "/v5/order/create", timeout_s=0.05)
    # Other endpoints are untouched.
    limiter.acquire(Lane.ORDER, "/v5/order/cancel", timeout_s=0)
    started = time.monotonic()
    limiter.acquire(Lane.ORDER, "/v5/order/create", timeout_s=2)  # raises if it would wait longer
    assert time.monotonic() - started > 0.2  # it did wait for the endpoint's reset


def test_headers_with_a_spent_budget_hold_back_the_lower_lanes_not_panic():
    limiter = RateLimiter(ip_limit=100, window_s=5)
    limiter.observe("/v5/position/list", LimitHeaders(limit=50, remaining=0, reset_ms=None), reset_in_s=0.4)
    with pytest.raises(RateLimited) as info:
        limiter.acquire(Lane.QUERY, "/v5/position/list", timeout_s=0.05)
    assert 0.2 < info.value.retry_after_s <= 0.4
    limiter.acquire(Lane.PANIC, "/v5/position/list", timeout_s=0)


def test_query_lane_leaves_endpoint_headroom_that_cancel_may_use():
    limiter = RateLimiter(ip_limit=100, window_s=5)
    # 5 of 50 left: under the query lane's 20 % reserve, above nothing for cancel.
    limiter.observe("/v5/order/realtime", LimitHeaders(limit=50, remaining=5, reset_ms=None))
    with pytest.raises(RateLimited):
        limiter.acquire(Lane.QUERY, "/v5/order/realtime", timeout_s=0)
    limiter.acquire(Lane.CANCEL, "/v5/order/realtime", timeout_s=0)
    # The rolling window gives the budget back at about `limit` per second: well within
    # half a second (the limiter raises rather than wait past its timeout).
    limiter.acquire(Lane.QUERY, "/v5/order/realtime", timeout_s=0.5)


def test_limit_headers_parse_any_case_and_ignore_garbage():
    parsed = LimitHeaders.parse({"x-bapi-limit": "10", "X-Bapi-Limit-Status": "7", "X-Bapi-Limit-Reset-Timestamp": "soon"})
    assert parsed == LimitHeaders(limit=10, remaining=7, reset_ms=None)
    assert LimitHeaders.parse(None) == LimitHeaders(None, None, None)


def test_stats_count_grants_per_lane():
    limiter = RateLimiter(ip_limit=100, window_s=5)
    limiter.acquire(Lane.QUERY, "/a", timeout_s=0)
    limiter.acquire(Lane.BACKFILL, "/b", timeout_s=0)
    stats = limiter.stats()
    assert stats["ip_window_used"] == 2
    assert stats["granted"]["query"] == 1 and stats["granted"]["backfill"] == 1
