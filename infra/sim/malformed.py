"""Frames a venue should never send, for the switches that test a client's parser.

Each kind breaks one thing a parser relies on; the valid-JSON ones look like
pushes of a topic the client subscribed to, so they reach its topic handler.
"""

from __future__ import annotations

from infra.sim.wire import dumps

MALFORMED_KINDS = (
    "not_json",  # not JSON at all
    "truncated",  # JSON cut off mid-frame
    "unknown_topic",  # a push for a topic nobody subscribed to
    "delta_before_snapshot",  # a ticker delta for a symbol the client has no snapshot of
    "bad_pong",  # a pong of a shape pybit does not recognise
    "missing_fields",  # a ticker snapshot without its prices, a kline without its bar
    "wrong_types",  # a ticker price that is an object, a kline start that is text
    "bad_utf8",  # a text frame whose bytes are not UTF-8 (sent as bytes: see Conn.send)
)

# What a load switch mixes among good frames: every kind a venue could plausibly send.
FLOOD_KINDS = ("missing_fields", "wrong_types", "unknown_topic", "not_json")


def malformed_frame(kind: str, symbol: str, now_ms: int, n: int = 0) -> str | bytes:
    """One malformed frame of `kind` about `symbol`; `n` varies it (e.g. ticker vs kline).
    Bytes are sent as a text frame as they are: the only way to put invalid UTF-8 on the wire."""
    if kind == "bad_utf8":
        good = dumps({"topic": f"tickers.{symbol}", "type": "delta", "data": {"symbol": symbol, "bid1Size": "1"},
                      "cs": 1, "ts": now_ms}).encode()
        return good.replace(b'"1"', b'"\xff\xfe"')
    if kind == "not_json":
        return "this is not json"
    if kind == "truncated":
        return '{"topic":"tickers.' + symbol + '","type":"snap'
    if kind == "unknown_topic":
        return dumps({"topic": "tickers.NOSUCHUSDT", "type": "snapshot", "data": {"symbol": "NOSUCHUSDT"},
                      "cs": 1, "ts": now_ms})
    if kind == "delta_before_snapshot":
        return dumps({"topic": "tickers.NEWUSDT", "type": "delta", "data": {"symbol": "NEWUSDT"}, "cs": 1, "ts": now_ms})
    if kind == "bad_pong":
        return dumps({"op": "ping", "success": True, "ret_msg": ""})
    if kind == "missing_fields":
        if n % 2:
            return dumps({"topic": f"kline.1.{symbol}", "type": "snapshot", "ts": now_ms,
                          "data": [{"interval": "1", "confirm": False}]})
        return dumps({"topic": f"tickers.{symbol}", "type": "snapshot", "data": {"symbol": symbol}, "cs": 1,
                      "ts": now_ms})
    if kind == "wrong_types":
        if n % 2:
            return dumps({"topic": f"kline.1.{symbol}", "type": "snapshot", "ts": now_ms,
                          "data": [{"start": "soon", "end": [], "interval": "1", "open": "1", "close": "1",
                                    "high": "1", "low": "1", "volume": "1", "turnover": "1", "confirm": "maybe",
                                    "timestamp": now_ms}]})
        return dumps({"topic": f"tickers.{symbol}", "type": "delta", "data": {"symbol": symbol, "lastPrice": {"x": 1}},
                      "cs": 1, "ts": now_ms})
    raise ValueError(f"kind must be one of {', '.join(MALFORMED_KINDS)}")
