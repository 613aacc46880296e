"""Panic actor.

Panic owns the trading state (it starts HALTED), closes every position with
a reduce-only order before cancelling that symbol's conditional orders, then
verifies flat over REST.

Not built yet: this actor only takes part in the node's start/stop order;
its behaviour is completed by its own issue. It handles no messages, and
any message sent to it is logged as `actor.unhandled_message`.
"""

from __future__ import annotations

from actors.base import NodeActor, Role


class Panic(NodeActor):
    role = Role.PANIC
