"""The supervision tree: which children the Supervisor runs, in start order."""

from __future__ import annotations

from actors.base import START_ORDER, Role
from actors.db_writer import DbWriter
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
    Role.WS_PRIVATE: WsPrivate,
    Role.WS_PUBLIC: WsPublic,
}


def default_children() -> list[ChildSpec]:
    return [ChildSpec(role=role, start=_ACTORS[role].start) for role in START_ORDER]
