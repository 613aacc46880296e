"""Build pybit clients for a venue: real Bybit hosts, or the loopback simulator.

pybit fixes its URLs at construction (REFERENCE.md section 6). The least
invasive overrides, both pinned by tests/integration/test_pybit_routing.py
so that a pybit upgrade that breaks them fails loudly:

* HTTP: every call builds `f"{self.endpoint}{path}"`, so assigning
  `endpoint` after construction reroutes all requests.
* WebSocket: the constructor connects at once, and reconnects call
  `self._connect(self.endpoint)`; a subclass that substitutes its own URL in
  `_connect` covers both, per instance, without touching module globals.
"""

from __future__ import annotations

import functools
import json
import select
import threading
from dataclasses import dataclass
from typing import Any, Callable
from uuid import uuid4

from pybit.unified_trading import HTTP, WebSocket
from tenacity import RetryCallState, Retrying, retry_if_not_exception_type, stop_after_attempt, stop_never
from tenacity.wait import wait_exponential_jitter
from websocket import WebSocketException

from infra.config import Credentials, ExchangeConfig, Venue
from infra.logging import get_logger


@dataclass(frozen=True)
class VenueUrls:
    rest: str
    ws_public: str
    ws_private: str


_OFFICIAL: dict[Venue, VenueUrls] = {
    Venue.MAINNET: VenueUrls(
        rest="https://api.bybit.com",
        ws_public="wss://stream.bybit.com/v5/public/linear",
        ws_private="wss://stream.bybit.com/v5/private",
    ),
    Venue.TESTNET: VenueUrls(
        rest="https://api-testnet.bybit.com",
        ws_public="wss://stream-testnet.bybit.com/v5/public/linear",
        ws_private="wss://stream-testnet.bybit.com/v5/private",
    ),
    # Demo trading serves only private streams; public data comes from mainnet.
    Venue.DEMO: VenueUrls(
        rest="https://api-demo.bybit.com",
        ws_public="wss://stream.bybit.com/v5/public/linear",
        ws_private="wss://stream-demo.bybit.com/v5/private",
    ),
}


def simulator_urls(rest: str) -> VenueUrls:
    """The simulator serves REST and both WebSockets on one port."""
    base = rest.rstrip("/")
    ws = "ws" + base[len("http"):] if base.startswith("http") else base
    return VenueUrls(rest=base, ws_public=f"{ws}/v5/public/linear", ws_private=f"{ws}/v5/private")


def venue_urls(venue: Venue, exchange: ExchangeConfig, sim: VenueUrls | None = None) -> VenueUrls:
    """Official hosts for the venue (or the running simulator's), with config overrides."""
    if venue is Venue.SIM:
        if sim is None:
            raise ValueError("venue 'sim' needs the running simulator's URLs")
        base = sim
    else:
        base = _OFFICIAL[venue]
    return VenueUrls(
        rest=exchange.rest_url or base.rest,
        ws_public=exchange.ws_public_url or base.ws_public,
        ws_private=exchange.ws_private_url or base.ws_private,
    )


def make_http(urls: VenueUrls, credentials: Credentials | None, **kwargs: Any) -> HTTP:
    """A pybit HTTP session whose every request goes to `urls.rest`."""
    keys = {}
    if credentials is not None:
        keys = {
            "api_key": credentials.api_key.get_secret_value(),
            "api_secret": credentials.api_secret.get_secret_value(),
        }
    session = HTTP(testnet=False, **keys, **kwargs)
    session.endpoint = urls.rest.rstrip("/")
    return session


class BytesFrames:
    """A pybit socket whose frames reach `json.loads` as the bytes that arrived.

    websocket-client checks every text frame's UTF-8 in a pure-Python loop
    over its bytes (24 us for a 141-byte ticker delta on this machine, more
    than half of what a bare pybit socket spends per frame), then decodes it
    again. `json.loads` takes bytes, decodes them in C and refuses invalid
    UTF-8 with a ValueError, so the check is done once, where the frame is
    parsed. pybit makes a new WebSocketApp per connection and starts it with
    only ping settings: the flag is added when pybit assigns it. If a pybit
    upgrade stopped assigning `ws` this way, the whole-node tests that send
    invalid UTF-8 (the simulator's `bad_utf8`) would see the socket drop.
    """

    @property
    def ws(self) -> Any:
        return self.__dict__.get("_app")

    @ws.setter
    def ws(self, app: Any) -> None:
        if app is not None and not isinstance(getattr(app, "run_forever", None), functools.partial):
            app.run_forever = functools.partial(app.run_forever, skip_utf8_validation=True)
        self.__dict__["_app"] = app


class RoutedWebSocket(WebSocket):
    """pybit's WebSocket, connecting (and reconnecting) to a given URL."""

    def __init__(self, *args: Any, ws_url: str, **kwargs: Any):
        self._routed_url = ws_url  # must exist before super().__init__, which connects
        super().__init__(*args, **kwargs)

    def _connect(self, url: str) -> Any:  # noqa: ARG002 - pybit passes its own template
        return super()._connect(self._routed_url)

    def send_op(self, op: str, args: list[str]) -> bool:
        """Send `{"op", "req_id", "args"}` now; False if the socket is not open."""
        try:
            self.ws.send(json.dumps({"op": op, "req_id": f"{op}-{uuid4().hex[:12]}", "args": args}))
        except (AttributeError, OSError, WebSocketException):
            return False
        return True


def make_public_ws(urls: VenueUrls, **kwargs: Any) -> RoutedWebSocket:
    return RoutedWebSocket(channel_type="linear", testnet=False, ws_url=urls.ws_public, **kwargs)


def make_private_ws(urls: VenueUrls, credentials: Credentials, **kwargs: Any) -> RoutedWebSocket:
    # pybit's default auth expiry of 1 s fails under modest clock skew (pybit#300).
    kwargs.setdefault("private_auth_expire", 10)
    return RoutedWebSocket(
        channel_type="private",
        testnet=False,
        ws_url=urls.ws_private,
        api_key=credentials.api_key.get_secret_value(),
        api_secret=credentials.api_secret.get_secret_value(),
        **kwargs,
    )


def frame_excerpt(message: Any, limit: int = 200) -> str:
    """The start of a frame for a log line (a BytesFrames socket passes bytes: shown decoded,
    what is not UTF-8 replaced)."""
    if isinstance(message, (bytes, bytearray)):
        message = bytes(message[: limit * 4]).decode("utf-8", errors="replace")
    return str(message)[:limit]


class SocketClosed(Exception):
    """The owner closed the socket while a connection attempt was pending."""


Hook = Callable[..., None]


class ManagedWebSocket(BytesFrames, RoutedWebSocket):
    """pybit's socket, with the node owning what pybit gets wrong (REFERENCE.md 5.2).

    * Every frame goes raw to one callback (pybit's `callback_function`): pybit
      never merges tickers (a delta before its snapshot raised inside pybit and
      ended the stream), never looks up a per-topic callback (an unsolicited
      topic or a failed ack raised KeyError), and a frame that is not JSON is
      handed to `on_garbage` instead of tearing the socket down.
    * Any error on a live socket reconnects, not only the three exception
      types pybit knows, and reconnects are retried forever with exponential
      back-off and jitter (pybit's own loop makes a fixed number of attempts
      milliseconds apart and then gives up for good). Only the first connect
      is bounded, so a venue that is down at start fails the start.
    * `on_up(epoch)` after every connect, `on_down(reason)` when a connected
      socket is lost. Subscriptions are not pybit's business here: the owner
      sends them from `on_up` (pybit's replay keeps unsubscribed topics and its
      subscribe blocks forever while disconnected).

    * `on_frame_done(data_waiting)` (an attribute, optional) after every
      frame: a receiver that queues frames can ask whether the next one is
      already here and wake its consumer once per burst, not once per frame.
    * Frames reach `json.loads` as bytes (`BytesFrames`): a frame that is
      not UTF-8 fails there and goes to `on_garbage` like any bad frame.

    Hooks run on pybit's thread; they must only hand work over (e.g. a tell).
    """

    def __init__(
        self,
        *args: Any,
        ws_url: str,
        on_frame: Callable[[dict[str, Any]], None],
        on_up: Hook | None = None,
        on_down: Hook | None = None,
        on_garbage: Hook | None = None,
        first_connect_attempts: int = 3,
        backoff_s: tuple[float, float] = (0.2, 30.0),
        **kwargs: Any,
    ):
        self._on_up = on_up
        self._on_down = on_down
        self._on_garbage = on_garbage
        self._closing = threading.Event()
        self._first_attempts = max(1, first_connect_attempts)
        self._backoff = backoff_s
        self.epoch = 0  # connections made so far; a send for an older epoch is stale
        self._reconnecting = False
        self._attempt_error = ""
        # Called on pybit's thread after every frame with `data_waiting`, so a receiver that
        # queues frames can tell the end of a burst. Set by the owner before it subscribes.
        self.on_frame_done: Hook | None = None
        self._poller: Any = None
        self._polled: Any = None  # the socket `_poller` watches
        self._log = get_logger("infra.bybit.ws").bind(url=ws_url)
        # retries=2 is one real attempt per round (pybit raises after its last attempt even when
        # it connected, REFERENCE.md 5.2); the rounds and their back-off are ours.
        kwargs["retries"] = 2
        kwargs["restart_on_error"] = True
        super().__init__(*args, ws_url=ws_url, callback_function=on_frame, **kwargs)

    # --- connecting -----------------------------------------------------------------

    def _connect(self, url: str) -> Any:
        stop = stop_after_attempt(self._first_attempts) if self.epoch == 0 else stop_never
        retrying = Retrying(
            stop=stop | (lambda _state: self._closing.is_set()),
            wait=wait_exponential_jitter(multiplier=self._backoff[0], max=self._backoff[1], jitter=self._backoff[0]),
            retry=retry_if_not_exception_type(SocketClosed),
            sleep=self._closing.wait,
            before_sleep=self._log_retry,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                if self._closing.is_set():
                    raise SocketClosed()
                self._reset()  # pybit leaves `exited` set after a failed attempt: no JSON pings then
                super()._connect(url)
                if not self.is_connected():
                    raise ConnectionError("connection lost while it was being set up")
                if self._closing.is_set():
                    super().exit()
                    raise SocketClosed()
        self.epoch += 1
        self._call(self._on_up, self.epoch)
        return None

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        # pybit's own exception text ("... will no longer try to reconnect") is not what happens
        # here; the attempt's real cause (refused, HTTP 403, ...) is the one its thread reported.
        cause = self._attempt_error or repr(exc)
        self._attempt_error = ""
        self._log.warning("ws.connect_retry", attempt=state.attempt_number, wait_s=round(wait, 3), error=cause)

    def _on_error(self, error: Any) -> None:
        if self._closing.is_set():
            return
        if self.attempting_connection:
            self._attempt_error = repr(error)  # a failed attempt: the loop in _connect decides what is next
            return
        self._reconnecting = True
        self._call(self._on_down, repr(error))
        try:
            super().exit()
            self._reset()
            self._connect(self.endpoint)
        except SocketClosed:
            return
        except Exception as exc:  # noqa: BLE001 - we are on pybit's thread; nothing may escape
            if not self._closing.is_set():  # closed during a back-off: that is no failure
                self._log.error("ws.reconnect_failed", error=repr(exc))
        finally:
            self._reconnecting = False

    @property
    def reconnecting(self) -> bool:
        """A connection attempt or a back-off between attempts is under way."""
        return self._reconnecting or bool(self.attempting_connection)

    # --- frames ------------------------------------------------------------------------

    def _on_message(self, message: Any) -> None:
        try:
            self._handle(message)
        finally:
            hook = self.on_frame_done
            if hook is not None:
                try:
                    hook(self.data_waiting)
                except Exception as exc:  # noqa: BLE001 - a hook must not kill pybit's thread
                    self._log.error("ws.hook_failed", error=repr(exc))

    def _handle(self, message: Any) -> None:
        try:
            frame = json.loads(message)
        except (TypeError, ValueError):
            self._call(self._on_garbage, "not JSON", frame_excerpt(message))
            return
        if not isinstance(frame, dict):
            self._call(self._on_garbage, "not an object", frame_excerpt(message))
            return
        if frame.get("ret_msg") == "pong" or frame.get("op") == "pong":
            return
        try:
            self.callback(frame)
        except Exception as exc:  # noqa: BLE001 - an escaping error would close the socket
            self._call(self._on_garbage, f"callback raised {exc!r}", frame_excerpt(message))

    def data_waiting(self) -> bool:
        """More of the stream is already here (in the TLS buffer or the kernel's), so the next
        frame follows at once. False when unsure: a caller then acts as if a burst ended."""
        try:
            sock = self.ws.sock.sock
            if sock is None:
                return False
            pending = getattr(sock, "pending", None)  # TLS: bytes already decrypted
            if pending is not None and pending():
                return True
            if self._polled is not sock:  # a new connection: a poll object for its socket
                poller = select.poll()
                poller.register(sock, select.POLLIN)
                self._poller, self._polled = poller, sock
            # A registered poll object: a third of select()'s cost, and this runs per frame.
            return bool(self._poller.poll(0))
        except (AttributeError, OSError, ValueError):
            return False

    def close(self) -> None:
        """Close for good: no reconnect after this, a pending back-off ends at once."""
        self._closing.set()
        super().exit()

    def _call(self, hook: Hook | None, *args: Any) -> None:
        if hook is None:
            return
        try:
            hook(*args)
        except Exception as exc:  # noqa: BLE001 - a hook must not kill pybit's thread
            self._log.error("ws.hook_failed", error=repr(exc))


def make_managed_public_ws(urls: VenueUrls, **kwargs: Any) -> ManagedWebSocket:
    return ManagedWebSocket(channel_type="linear", testnet=False, ws_url=urls.ws_public, **kwargs)
