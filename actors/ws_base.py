"""What both WebSocket actors share: a pybit socket and the router its callbacks call."""

from __future__ import annotations

from typing import Any

from actors.base import ActorContext, NodeActor
from actors.frame_router import FrameRouter


class WsActor(NodeActor):
    """Owns one pybit WebSocket. On stop the router is retired first, so frames
    arriving while the socket closes are dropped, never mixed into state."""

    def __init__(self, ctx: ActorContext, router: FrameRouter):
        super().__init__(ctx)
        self._router = router
        self._ws: Any = None

    def on_stop(self) -> None:
        self._router.retired = True
        if self._ws is not None:
            self._ws.exit()
        super().on_stop()
