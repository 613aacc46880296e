"""Risk actor.

Risk owns the daily loss tracker and the pre-trade checks, answering from a
snapshot with no exchange calls; an unseeded tracker blocks trading.

Not built yet: this actor only takes part in the node's start/stop order;
its behaviour is completed by its own issue. It handles no messages, and
any message sent to it is logged as `actor.unhandled_message`.
"""

from __future__ import annotations

from actors.base import NodeActor, Role


class Risk(NodeActor):
    role = Role.RISK
