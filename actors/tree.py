"""The supervision tree: which children the Supervisor runs, in start order."""

from __future__ import annotations

from typing import Any

from actors.base import START_ORDER, Role
from actors.db_writer import DbWriter
from actors.example_strategy import ExampleStrategy, strategy_enabled
from actors.executor import Executor
from actors.panic import Panic
from actors.risk import Risk
from actors.state_store import StateStore
from actors.supervisor import ChildSpec
from actors.ws_private import WsPrivate
from actors.ws_public import WsPublic

_ACTORS = {
    Role.STATE_STORE: StateStore,
    Role.DB_WRITER: DbWriter,
    Role.RISK: Risk,
    Role.PANIC: Panic,
    Role.EXECUTOR: Executor,
    Role.EXAMPLE_STRATEGY: ExampleStrategy,
    Role.WS_PRIVATE: WsPrivate,
    Role.WS_PUBLIC: WsPublic,
}

# Children that run only when the configuration asks for them.
_OPTIONAL = {Role.EXAMPLE_STRATEGY: strategy_enabled}

# A new StateStore is empty: the sockets that feed it reconnect, re-announce their
# topics and reseed it, so they are restarted right after it.
_DEPENDENTS = {Role.STATE_STORE: (Role.WS_PRIVATE, Role.WS_PUBLIC)}
# Replaced when the StateStore reports their streams stale (open but silent, DATA-011).
_SOCKETS = {Role.WS_PUBLIC: "public", Role.WS_PRIVATE: "private"}


def default_children(node: Any = None) -> list[ChildSpec]:
    """Every child in START_ORDER; optional ones only when `node` (a NodeConfig) enables them."""
    return [
        ChildSpec(role=role, start=_ACTORS[role].start, dependents=_DEPENDENTS.get(role, ()), socket=_SOCKETS.get(role))
        for role in START_ORDER
        if role not in _OPTIONAL or (node is not None and _OPTIONAL[role](node))
    ]


def actor_class(role: Role) -> type:
    """The actor class that plays `role` (tests wrap it to inject faults)."""
    return _ACTORS[role]
