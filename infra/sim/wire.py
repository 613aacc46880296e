"""Bybit V5 wire shapes shared by the REST and WebSocket sides."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

# Bybit's retCodes the simulator answers with (REFERENCE.md 2.4).
OK = 0
PARAM_ERROR = 10001
TIMESTAMP_ERROR = 10002
INVALID_KEY = 10003
SIGN_ERROR = 10004
PERMISSION_DENIED = 10005
TOO_MANY_VISITS = 10006
SERVER_ERROR = 10016
ORDER_NOT_EXISTS = 110001
PRICE_OUT_OF_RANGE = 110003
INSUFFICIENT_BALANCE = 110007
REDUCE_ONLY_VIOLATION = 110017
POSITION_EXISTS = 110024
POSITION_MODE_NOT_MODIFIED = 110025
OPEN_ORDERS_EXIST = 110028
LEVERAGE_NOT_MODIFIED = 110043
DUPLICATE_ORDER_LINK_ID = 110072
NOTIONAL_TOO_LOW = 110094
NOT_MODIFIED = 34040


class SimError(Exception):
    """A business error: answered as HTTP 200 with this retCode and retMsg."""

    def __init__(self, code: int, msg: str):
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg


class Raw(dict):
    """A handler result that is the whole response body (DCP answers without `result`)."""


def param_error(msg: str) -> SimError:
    return SimError(PARAM_ERROR, msg)


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def envelope(result: Any, time_ms: int, code: int = OK, msg: str = "OK") -> dict:
    return {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": time_ms}


def dec_str(value: Decimal) -> str:
    """A Decimal as Bybit writes it: plain notation, no exponent, no trailing zeros."""
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text


def dec_fixed(value: Decimal, places: int) -> str:
    return format(value.quantize(Decimal(1).scaleb(-places)), "f")
