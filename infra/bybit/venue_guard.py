"""Which hosts may receive account-changing requests, for a given venue and trading mode.

`load_config` already refuses a paper config on mainnet. This guard holds
the same line again at the last moment, on the URL a request is about to
go to, so neither a hand-built config nor a `rest_url` override can carry
paper trading to a real-money host. Paper trading is an allowlist: the
loopback simulator, testnet and demo hosts. Anything else may hold real
money and is refused.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from infra.bybit.errors import OrderRefused
from infra.config import TradingMode, Venue, mode_problems
from infra.logging import get_logger

log = get_logger("gateway")

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
PAPER_MONEY_HOSTS = frozenset({"api-testnet.bybit.com", "api-demo.bybit.com", "api-demo-testnet.bybit.com"})


def trading_problems(venue: Venue, mode: TradingMode, live_confirmed: bool, rest_url: str) -> list[str]:
    """Every reason an account-changing request to `rest_url` must not be sent. Empty: allowed."""
    problems = [reason for _, reason in mode_problems(venue, mode)]
    if mode is TradingMode.LIVE and not live_confirmed:
        problems.append("live trading is not confirmed (live_confirmed: true or --i-mean-live)")
    return problems + host_problems(venue, mode, rest_url)


def host_problems(venue: Venue, mode: TradingMode, rest_url: str) -> list[str]:
    """Whether the REST host fits the venue and the money at stake."""
    problems: list[str] = []
    host = (urlsplit(rest_url).hostname or "").lower()
    if mode is TradingMode.PAPER and host not in LOOPBACK_HOSTS | PAPER_MONEY_HOSTS:
        problems.append(f"paper trading refused: {host or rest_url!r} is not a simulator, testnet or demo host")
    if venue is Venue.SIM and host not in LOOPBACK_HOSTS:
        problems.append(f"venue 'sim' must be on loopback, not {host!r}")
    if mode is TradingMode.LIVE and host in LOOPBACK_HOSTS | PAPER_MONEY_HOSTS:
        problems.append(f"live trading pointed at a paper host {host!r}")
    return problems


class WriteGuard:
    """Called with the session's base URL before every account-changing request."""

    def __init__(self, venue: Venue, mode: TradingMode, live_confirmed: bool):
        self.venue = venue
        self.mode = mode
        self.live_confirmed = live_confirmed

    def problems(self, rest_url: str) -> list[str]:
        return trading_problems(self.venue, self.mode, self.live_confirmed, rest_url)

    def __call__(self, rest_url: str) -> None:
        problems = self.problems(rest_url)
        if problems:
            log.error(
                "gateway.trading_refused",
                venue=self.venue.value,
                trading_mode=self.mode.value,
                rest_url=rest_url,
                problems=problems,
            )
            raise OrderRefused("trading_refused", "; ".join(problems))
