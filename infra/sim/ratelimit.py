"""Bybit's two REST limits (REFERENCE.md 2.5), on wall time.

* Per API key and endpoint: a rolling 1-second window. Over it, retCode
  10006 "Too many visits!". Every answer carries `X-Bapi-Limit`,
  `X-Bapi-Limit-Status` and `X-Bapi-Limit-Reset-Timestamp` (on 10006 the
  reset is in the future, else pybit would sleep a negative time).
* Per IP: 600 requests per 5 seconds; over it, HTTP 403 for a ban period.
"""

from __future__ import annotations

import time
from collections import deque

from infra.sim.clock import wall_ms

# Requests per second per endpoint (UTA 2.0 Pro defaults for linear).
ENDPOINT_LIMITS: dict[str, int] = {
    "/v5/order/create": 10,
    "/v5/order/amend": 10,
    "/v5/order/cancel": 10,
    "/v5/order/cancel-all": 10,
    "/v5/order/disconnected-cancel-all": 5,
    "/v5/order/realtime": 50,
    "/v5/order/history": 50,
    "/v5/execution/list": 50,
    "/v5/position/list": 50,
    "/v5/position/closed-pnl": 50,
    "/v5/position/set-leverage": 10,
    "/v5/position/switch-mode": 10,
    "/v5/position/trading-stop": 10,
    "/v5/account/wallet-balance": 50,
    "/v5/account/fee-rate": 10,
    "/v5/account/query-dcp-info": 10,
    "/v5/user/query-api": 10,
}


class EndpointLimiter:
    def __init__(self, limits: dict[str, int] | None = None):
        self.limits = dict(ENDPOINT_LIMITS if limits is None else limits)
        self._hits: dict[tuple[str, str], deque[int]] = {}

    def hit(self, key: str, path: str) -> tuple[bool, dict[str, str]]:
        """Count one request; (allowed, headers)."""
        limit = self.limits.get(path)
        if limit is None:
            return True, {}
        now = wall_ms()
        window = self._hits.setdefault((key, path), deque())
        while window and window[0] <= now - 1000:
            window.popleft()
        if len(window) >= limit:
            reset = window[0] + 1000
            return False, limit_headers(limit, 0, reset)
        window.append(now)
        return True, limit_headers(limit, limit - len(window), now)


def limit_headers(limit: int, remaining: int, reset_ms: int) -> dict[str, str]:
    return {
        "X-Bapi-Limit": str(limit),
        "X-Bapi-Limit-Status": str(remaining),
        "X-Bapi-Limit-Reset-Timestamp": str(reset_ms),
    }


class IpLimiter:
    """600 requests per 5 s; a breach bans the IP (HTTP 403) for `ban_s`."""

    def __init__(self, limit: int = 600, window_s: float = 5.0, ban_s: float = 600.0):
        self.limit, self.window_s, self.ban_s = limit, window_s, ban_s
        self._hits: deque[float] = deque()
        self.banned_until = 0.0

    def hit(self) -> bool:
        """Count one request; False while banned."""
        now = time.monotonic()
        if now < self.banned_until:
            return False
        while self._hits and self._hits[0] <= now - self.window_s:
            self._hits.popleft()
        if len(self._hits) >= self.limit:
            self.banned_until = now + self.ban_s
            self._hits.clear()
            return False
        self._hits.append(now)
        return True
