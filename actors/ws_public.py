"""WsPublic actor.

WsPublic owns the public pybit WebSocket: ticker and kline subscriptions,
parsing frames into messages told to the StateStore (and closed bars to the
DbWriter).

Not built yet: this actor only takes part in the node's start/stop order;
its behaviour is completed by its own issue. It handles no messages, and
any message sent to it is logged as `actor.unhandled_message`.
"""

from __future__ import annotations

from actors.base import NodeActor, Role


class WsPublic(NodeActor):
    role = Role.WS_PUBLIC
