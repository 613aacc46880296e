"""A scripted REST venue on loopback, for tests of the gateway's edges.

The simulator (`infra.sim`) is the real venue of the integration tests.
This double is smaller: each test scripts exactly the answers it needs
(a 403, a 10006 with a reset header, a create that answers too late, ...)
and reads back every request that arrived, so a test can prove that a
request was *not* sent. Real sockets, real pybit on the client side.

    with ScriptedVenue() as venue:
        venue.on("GET", "/v5/market/time", lambda req: Reply(body=envelope({...})))
        gateway = Gateway.create(urls=venue.urls, ...)
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping
from urllib.parse import parse_qsl, urlsplit

from infra.bybit.clients import VenueUrls


def envelope(result: Any = None, *, ret_code: int = 0, ret_msg: str = "OK", time_ms: int | None = None) -> dict[str, Any]:
    """A Bybit V5 response envelope."""
    return {
        "retCode": ret_code,
        "retMsg": ret_msg,
        "result": {} if result is None else result,
        "retExtInfo": {},
        "time": time_ms if time_ms is not None else int(time.time() * 1000),
    }


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # a dict is sent as JSON, a str as is
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: dict[str, Any] | None
    headers: dict[str, str]
    at: float


Handler = Callable[[Recorded], Reply]


class ScriptedVenue:
    """HTTP server on 127.0.0.1 answering from per-route handlers; records every request."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], Handler] = {}
        self._lock = threading.Lock()
        self._requests: list[Recorded] = []
        self._stopping = threading.Event()
        venue = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # silence http.server's stderr lines
                pass

            def _serve(self) -> None:
                split = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = {"_raw": raw.decode(errors="replace")}
                rec = Recorded(
                    method=self.command,
                    path=split.path,
                    query=dict(parse_qsl(split.query)),
                    body=body,
                    headers={k: v for k, v in self.headers.items()},
                    at=time.monotonic(),
                )
                reply = venue._dispatch(rec)
                if reply.delay_s and venue._stopping.wait(reply.delay_s):
                    return
                payload = reply.body if isinstance(reply.body, str) else json.dumps(reply.body if reply.body is not None else {})
                data = payload.encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            do_GET = _serve
            do_POST = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="scripted-venue", daemon=True
        )

    # --- lifecycle -------------------------------------------------------------

    def start(self) -> "ScriptedVenue":
        self._thread.start()
        return self

    def close(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "ScriptedVenue":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def urls(self) -> VenueUrls:
        base = f"http://127.0.0.1:{self.port}"
        return VenueUrls(rest=base, ws_public=f"ws://127.0.0.1:{self.port}/v5/public/linear", ws_private=f"ws://127.0.0.1:{self.port}/v5/private")

    # --- script ------------------------------------------------------------------

    def on(self, method: str, path: str, handler: Handler | Reply | Mapping[str, Any]) -> None:
        """Answer `method path` with `handler(request)`, a fixed Reply, or a fixed JSON body."""
        if isinstance(handler, Reply):
            fixed = handler
            handler = lambda _req: fixed  # noqa: E731
        elif isinstance(handler, Mapping):
            body = dict(handler)
            handler = lambda _req: Reply(body=body)  # noqa: E731
        with self._lock:
            self._routes[(method.upper(), path)] = handler

    def _dispatch(self, rec: Recorded) -> Reply:
        with self._lock:
            self._requests.append(rec)
            handler = self._routes.get((rec.method, rec.path))
        if handler is None:
            return Reply(status=404, body={"retCode": 10017, "retMsg": "route not found"})
        try:
            return handler(rec)
        except Exception as exc:  # noqa: BLE001 - a broken script must be visible to the test
            return Reply(status=500, body={"error": f"script raised {exc!r}"})

    def requests(self, path: str | None = None, method: str | None = None) -> list[Recorded]:
        with self._lock:
            return [r for r in self._requests if (path is None or r.path == path) and (method is None or r.method == method)]


def instrument_row(
    symbol: str = "BTCUSDT",
    *,
    tick: str = "0.10",
    step: str = "0.001",
    min_qty: str = "0.001",
    max_qty: str = "1190.000",
    max_market_qty: str = "500.000",
    min_notional: str = "5",
    max_leverage: str = "100.00",
    status: str = "Trading",
) -> dict[str, Any]:
    """One instruments-info row shaped like Bybit's (defaults: the documented BTCUSDT)."""
    return {
        "symbol": symbol,
        "contractType": "LinearPerpetual",
        "status": status,
        "baseCoin": symbol.removesuffix("USDT"),
        "quoteCoin": "USDT",
        "settleCoin": "USDT",
        "priceScale": "2",
        "leverageFilter": {"minLeverage": "1", "maxLeverage": max_leverage, "leverageStep": "0.01"},
        "priceFilter": {"minPrice": "0.10", "maxPrice": "1999999.80", "tickSize": tick},
        "lotSizeFilter": {
            "maxOrderQty": max_qty,
            "minOrderQty": min_qty,
            "qtyStep": step,
            "maxMktOrderQty": max_market_qty,
            "minNotionalValue": min_notional,
        },
    }


def serve_instruments(venue: ScriptedVenue, *rows: Mapping[str, Any]) -> None:
    """Answer instruments-info with `rows` (filtered by the `symbol` query parameter)."""
    table = {r["symbol"]: dict(r) for r in (rows or (instrument_row(),))}

    def answer(req: Recorded) -> Reply:
        wanted = req.query.get("symbol")
        items = [table[wanted]] if wanted in table else ([] if wanted else list(table.values()))
        return Reply(body=envelope({"category": "linear", "list": items, "nextPageCursor": ""}))

    venue.on("GET", "/v5/market/instruments-info", answer)


def limit_headers(limit: int, remaining: int, reset_in_ms: int = 0) -> dict[str, str]:
    """`X-Bapi-Limit*` headers; `reset_in_ms` > 0 puts the reset in the future."""
    return {
        "X-Bapi-Limit": str(limit),
        "X-Bapi-Limit-Status": str(remaining),
        "X-Bapi-Limit-Reset-Timestamp": str(int(time.time() * 1000) + reset_in_ms),
    }
