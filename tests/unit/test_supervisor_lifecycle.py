"""Supervisor start/stop order, start failures and child failures, with recording test children."""

from __future__ import annotations

import threading

import pykka
import pytest

from actors.base import START_ORDER, Directory, NodeActor, Role
from actors.supervisor import ChildSpec, Supervisor
from actors.tree import default_children
from infra.config import load_config
from messages.control import Ping
from tests.helpers import wait_until


class Journal:
    def __init__(self):
        self.entries: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def add(self, what, role):
        with self.lock:
            self.entries.append((what, role))


def recording(role: Role, journal: Journal, fail_start=False):
    class Recorder(NodeActor):
        def on_start(self):
            if fail_start:
                raise RuntimeError(f"{role.value} cannot start")
            journal.add("start", role.value)

        def on_stop(self):
            journal.add("stop", role.value)

        def handlers(self):
            return {ValueError: self._explode}

        def _explode(self, exc):
            raise exc

    Recorder.role = role
    return ChildSpec(role=role, start=Recorder.start)


@pytest.fixture
def app(write_config):
    return load_config(write_config("supervisor:\n  ask_timeout_s: 2\nshutdown:\n  graceful_timeout_s: 5\n"))


def test_default_tree_is_in_dependency_order(write_config):
    assert START_ORDER == (
        Role.STATE_STORE, Role.DB_WRITER, Role.RISK, Role.PANIC, Role.EXECUTOR, Role.EXAMPLE_STRATEGY,
        Role.WS_PRIVATE, Role.WS_PUBLIC,
    )
    enabled = load_config(write_config("strategy:\n  enabled: true\n")).node
    assert [c.role for c in default_children(enabled)] == list(START_ORDER)
    # The example strategy is optional: off by default, and off on a venue it is not allowed on.
    without = [r for r in START_ORDER if r is not Role.EXAMPLE_STRATEGY]
    assert [c.role for c in default_children()] == without
    assert [c.role for c in default_children(load_config(write_config("")).node)] == without
    elsewhere = load_config(write_config("strategy:\n  enabled: true\n  venues: [testnet]\n")).node
    assert [c.role for c in default_children(elsewhere)] == without


def test_children_start_in_order_and_stop_in_reverse(app):
    journal = Journal()
    directory = Directory()
    sup = Supervisor.start(app, directory, [recording(r, journal) for r in START_ORDER])
    assert sup.ask(Ping(), timeout=5) is True
    assert all(directory.get(r) is not None for r in START_ORDER)
    assert sup.stop(block=True, timeout=10)
    order = [r.value for r in START_ORDER]
    assert journal.entries == [("start", r) for r in order] + [("stop", r) for r in reversed(order)]
    assert all(directory.get(r) is None for r in START_ORDER)


def test_a_child_that_cannot_start_fails_the_whole_start(app):
    journal = Journal()
    specs = [recording(Role.STATE_STORE, journal), recording(Role.DB_WRITER, journal),
             recording(Role.RISK, journal, fail_start=True), recording(Role.PANIC, journal)]
    sup = Supervisor.start(app, Directory(), specs)
    with pytest.raises(pykka.ActorDeadError):
        sup.ask(Ping(), timeout=5)
    # The two that did start were stopped again, newest first; PANIC never started.
    assert journal.entries == [("start", "state_store"), ("start", "db_writer"),
                               ("stop", "db_writer"), ("stop", "state_store")]
    assert pykka.ActorRegistry.get_all() == []


def test_a_failed_child_is_reported_and_replaced_by_a_new_generation(app):
    journal = Journal()
    directory = Directory()
    sup = Supervisor.start(app, directory, [recording(r, journal) for r in (Role.STATE_STORE, Role.RISK)])
    sup.ask(Ping(), timeout=5)
    risk = directory.get(Role.RISK)
    risk.tell(ValueError("boom"))  # a raising tell handler kills a Pykka actor
    wait_until(lambda: directory.get(Role.RISK) not in (None, risk), what="a new risk actor")
    assert not risk.is_alive()
    assert sup.proxy().generation(Role.RISK).get(timeout=5) == 1
    assert directory.is_retired(Role.RISK, 0) and not directory.is_retired(Role.RISK, 1)
    assert sup.proxy().running_roles().get(timeout=5) == ["state_store", "risk"]
    sup.stop(block=True, timeout=10)
    assert journal.entries.count(("start", "risk")) == 2
    assert journal.entries.count(("stop", "risk")) == 1  # on_stop does not run for the failed one
