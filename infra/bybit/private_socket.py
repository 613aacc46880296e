"""One connection of the private WebSocket: pybit connects, signs and pings; the node does the rest.

pybit's private socket sends `auth` and then, on a reconnect, every stored
subscription at once without waiting for the answer; a failed `auth` raises
inside its thread and kills the socket silently; a frame that is not JSON
does the same; its subscribe blocks forever while disconnected; and its
reconnect gives up after a few fast attempts (REFERENCE.md 5.2). So this
socket is used for exactly one connection:

* pybit's `callback_function` receives every frame raw (the auth answer with
  the venue's reason, acks, pongs, pushes); nothing pybit does with a frame
  can raise;
* pybit never reconnects it (`restart_on_error=False`): `on_down(reason)` is
  called once when the connection is lost and the owner (WsPrivate) opens a
  new one with its own back-off, authenticates, subscribes after the auth
  answer and reseeds;
* `send_op` (RoutedWebSocket's) sends a subscribe (or any op) now, never blocking;
* frames reach `json.loads` as bytes (`BytesFrames`): one that is not UTF-8
  is garbage like any other, where websocket-client's own check tore the
  connection down.

Hooks run on pybit's thread: they must only hand work over (a tell, an Event).
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable

from infra.bybit.clients import BytesFrames, RoutedWebSocket, VenueUrls, frame_excerpt
from infra.config import Credentials
from infra.logging import get_logger

log = get_logger("infra.bybit.private_socket")

Frame = dict[str, Any]


class PrivateSocket(BytesFrames, RoutedWebSocket):
    def __init__(
        self,
        urls: VenueUrls,
        credentials: Credentials,
        *,
        on_frame: Callable[[Frame], None],
        on_down: Callable[[str], None],
        on_garbage: Callable[[str], None] | None = None,
        auth_expire_s: int = 10,
        **kwargs: Any,
    ):
        self._frame_hook = on_frame
        self._down_hook = on_down
        self._garbage_hook = on_garbage
        self._closing = threading.Event()
        self._down_told = threading.Event()
        self._last_error = ""
        # retries=2 is one real attempt (pybit raises after its last attempt even when it
        # connected, REFERENCE.md 5.2); the retries and their back-off are WsPrivate's.
        kwargs.update(retries=2, restart_on_error=False)
        super().__init__(
            channel_type="private",
            testnet=False,
            ws_url=urls.ws_private,
            api_key=credentials.api_key.get_secret_value(),
            api_secret=credentials.api_secret.get_secret_value(),
            # pybit's default of 1 s fails under modest clock skew (pybit#300).
            private_auth_expire=auth_expire_s,
            callback_function=on_frame,
            **kwargs,
        )

    # --- what the owner calls ------------------------------------------------

    def close(self) -> None:
        """Close for good; `on_down` is not called for it."""
        self._closing.set()
        try:
            self.exit()
        except Exception as exc:  # noqa: BLE001 - closing must not fail the caller
            log.warning("ws.close_failed", error=repr(exc))

    # --- pybit's hooks (its thread) ------------------------------------------

    def _on_message(self, message: Any) -> None:
        try:
            frame = json.loads(message)
        except (TypeError, ValueError):
            self._garbage(f"not JSON: {frame_excerpt(message, 120)}")
            return
        if not isinstance(frame, dict):
            self._garbage(f"not an object: {frame_excerpt(message, 120)}")
            return
        try:
            # Pongs too: they are how a quiet private socket shows it is alive.
            self._frame_hook(frame)
        except Exception as exc:  # noqa: BLE001 - an escaping error would close the socket
            self._garbage(f"frame handler raised {exc!r}")

    def _on_error(self, error: Any) -> None:
        self._last_error = repr(error)
        if not self._closing.is_set():
            self._down(self._last_error)
        try:
            if not self.exited:
                self.exit()
        except Exception:  # noqa: BLE001 - nothing may escape into pybit's thread
            pass

    def _on_close(self) -> None:
        if not self._closing.is_set():
            self._down(self._last_error or "closed by the venue")

    def _down(self, reason: str) -> None:
        if self._down_told.is_set():
            return
        self._down_told.set()
        try:
            self._down_hook(reason)
        except Exception as exc:  # noqa: BLE001
            log.error("ws.hook_failed", error=repr(exc))

    def _garbage(self, what: str) -> None:
        if self._garbage_hook is None:
            return
        try:
            self._garbage_hook(what)
        except Exception as exc:  # noqa: BLE001
            log.error("ws.hook_failed", error=repr(exc))
