"""The simulated trading account (filled in by the trading engine)."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from infra.sim.exchange import Exchange


class Account:
    def __init__(self, ex: "Exchange", dcp_available: bool, starting_balance: Decimal):
        self.ex = ex
        self.dcp_available = dcp_available
        self.balance = starting_balance

    def on_path(self, t0: int, t1: int) -> None: ...
    def on_jump(self, symbol: str, t: int, before: int, after: int) -> None: ...
    def settle_funding(self, t: int) -> None: ...
    def dcp_due(self) -> int | None: return None
    def check_dcp(self, t: int) -> None: ...
    def on_dcp_subscribed(self, conn: Any) -> None: ...
    def on_private_gone(self, conn: Any, t: int) -> None: ...
    def push_position_marks(self, t: int) -> None: ...

    def api_key_info(self, now: int) -> dict:
        return {"apiKey": self.ex.api_key}
