"""Executor actor.

Executor runs signal -> trading state -> risk -> price check -> order with
an idempotent orderLinkId -> fill confirmation -> record.

Not built yet: this actor only takes part in the node's start/stop order;
its behaviour is completed by its own issue. It handles no messages, and
any message sent to it is logged as `actor.unhandled_message`.
"""

from __future__ import annotations

from actors.base import NodeActor, Role


class Executor(NodeActor):
    role = Role.EXECUTOR
