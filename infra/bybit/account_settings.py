"""Idempotent account settings: position TP/SL, leverage, one-way mode, disconnect-cancel-all.

Each is safe to repeat, so each retries transient errors; "not modified"
answers mean the wanted state already holds and come back as False.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Mapping

from infra.bybit.errors import OrderRefused, Rejected
from infra.bybit.instrument_lookup import InstrumentLookup
from infra.bybit.instruments import decimal_str
from infra.bybit.models import DcpInfo
from infra.bybit.product import CATEGORY
from infra.bybit.rate_limit import Lane
from infra.bybit.transport import Endpoint, Endpoints
from infra.logging import get_logger

log = get_logger("gateway")

RET_LEVERAGE_NOT_MODIFIED = 110043
RET_TPSL_NOT_MODIFIED = 34040
RET_MODE_NOT_MODIFIED = 110025


class AccountSettings(InstrumentLookup):
    """`Gateway`'s trading-stop, leverage, position mode and DCP calls."""

    def set_trading_stop(
        self,
        symbol: str,
        *,
        take_profit: Decimal | None = None,
        stop_loss: Decimal | None = None,
        trailing_stop: Decimal | None = None,
        tp_trigger_by: str | None = None,
        sl_trigger_by: str | None = None,
    ) -> bool:
        """Set the position's TP/SL (Full mode, one-way). Decimal(0) removes that leg. False: unchanged."""
        self._sender.check_writable()
        inst = self.instrument(symbol)
        params: dict[str, Any] = {"category": CATEGORY, "symbol": symbol, "tpslMode": "Full", "positionIdx": 0}
        for name, value in (("takeProfit", take_profit), ("stopLoss", stop_loss)):
            if value is None:
                continue
            params[name] = "0" if value == 0 else decimal_str(inst.checked_tick_price(value, name))
        if trailing_stop is not None:
            # A distance from the best price, not a price: whole ticks, but no price-range check.
            params["trailingStop"] = "0" if trailing_stop == 0 else decimal_str(inst.checked_tick_distance(trailing_stop, "trailingStop"))
        if tp_trigger_by:
            params["tpTriggerBy"] = tp_trigger_by
        if sl_trigger_by:
            params["slTriggerBy"] = sl_trigger_by
        changed = self._idempotent_write("set_trading_stop", Endpoints.TRADING_STOP, params, RET_TPSL_NOT_MODIFIED)
        log.info("gateway.trading_stop_set", symbol=symbol, take_profit=params.get("takeProfit"), stop_loss=params.get("stopLoss"), changed=changed)
        return changed

    def set_leverage(self, symbol: str, leverage: Decimal) -> bool:
        """Same leverage both sides (one-way). False: it already was that."""
        self._sender.check_writable()
        inst = self.instrument(symbol)
        rounded = inst.round_leverage(leverage)
        if rounded < inst.min_leverage or rounded > inst.max_leverage:
            raise OrderRefused(
                "leverage_out_of_range", f"{symbol}: {leverage} outside [{inst.min_leverage}, {inst.max_leverage}]"
            )
        value = decimal_str(rounded)
        params = {"category": CATEGORY, "symbol": symbol, "buyLeverage": value, "sellLeverage": value}
        changed = self._idempotent_write("set_leverage", Endpoints.SET_LEVERAGE, params, RET_LEVERAGE_NOT_MODIFIED)
        log.info("gateway.leverage_set", symbol=symbol, leverage=value, changed=changed)
        return changed

    def switch_to_one_way(self, symbol: str) -> bool:
        """Put `symbol` in one-way mode. False: it already was. Rejected 110024/110028: positions or orders block it."""
        self._sender.check_writable()
        params = {"category": CATEGORY, "symbol": symbol, "mode": 0}
        return self._idempotent_write("switch_mode", Endpoints.SWITCH_MODE, params, RET_MODE_NOT_MODIFIED)

    def query_dcp(self) -> DcpInfo:
        """Whether the account has DCP for derivatives (granted per account by Bybit)."""
        lane = self._sender.lane(Lane.QUERY)
        try:
            answer = self._sender.retried(Endpoints.DCP_INFO, lane)
        except Rejected as exc:
            log.warning("gateway.dcp_query_rejected", ret_code=exc.ret_code, ret_msg=exc.ret_msg)
            return DcpInfo(available=False)
        for info in answer.result.get("dcpInfos") or []:
            if isinstance(info, Mapping) and info.get("product") == "DERIVATIVES":
                try:
                    window = int(str(info.get("timeWindow") or "0")) or None
                except ValueError:
                    window = None
                return DcpInfo(available=True, enabled=str(info.get("dcpStatus", "")).upper() == "ON", window_s=window)
        return DcpInfo(available=False)

    def arm_dcp(self, window_s: int) -> None:
        """Set the derivatives DCP window. Only effective while a private socket subscribes `dcp.future`."""
        self._sender.check_writable()
        if not 3 <= window_s <= 300:
            raise ValueError("the DCP window must be within 3..300 s")
        lane = self._sender.lane(Lane.ORDER)
        params = {"product": "DERIVATIVES", "timeWindow": window_s}
        self._sender.retried(Endpoints.SET_DCP, lane, params, call="set_dcp")

    def _idempotent_write(self, what: str, endpoint: Endpoint, params: Mapping[str, Any], not_modified: int) -> bool:
        """True: the venue changed something; False: it already was so ("not modified")."""
        lane = self._sender.lane(Lane.ORDER)
        try:
            self._sender.retried(endpoint, lane, params, call=what)
        except Rejected as exc:
            if exc.ret_code == not_modified:
                return False
            raise
        return True
