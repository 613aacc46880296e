"""WsPrivate with a fake socket and a fake gateway: auth first, subscribe after its answer, reseed after every connect."""

from __future__ import annotations

import json
import threading
from decimal import Decimal

import pykka
import pytest

from actors.base import ActorContext, Directory, Role
from actors.state_store import LiveState
from actors.ws_private import ACCOUNT_TOPICS, DCP_TOPIC, WsPrivate
from infra.bybit.clients import VenueUrls
from infra.config import load_config
from messages import Execution, Position, Wallet
from messages.account import AccountReseed, PrivatePulse
from messages.control import SocketStatus
from messages.queries import GetSnapshot
from tests.conftest import SAMPLES
from tests.helpers import wait_until

URLS = VenueUrls(rest="http://127.0.0.1:1", ws_public="ws://127.0.0.1:1/v5/public/linear",
                 ws_private="ws://127.0.0.1:1/v5/private")


def sample(name):
    return json.loads((SAMPLES / name).read_text())


class FakeSocket:
    def __init__(self, on_frame, on_down, on_garbage):
        self.on_frame, self.on_down, self.on_garbage = on_frame, on_down, on_garbage
        self.ops: list[tuple[str, list[str]]] = []
        self.closed = False

    def send_op(self, op, args):
        self.ops.append((op, list(args)))
        return True

    def close(self):
        self.closed = True

    # what the venue would send
    def auth(self, ok=True, reason=""):
        self.on_frame({"success": ok, "ret_msg": reason, "op": "auth", "conn_id": "c"})

    def ack(self, ok=True, reason=""):
        self.on_frame({"success": ok, "ret_msg": reason, "op": "subscribe", "conn_id": "c"})

    def ack_all(self):
        """Answer each subscribe as it is sent (one is in flight at a time)."""
        for i in range(2):
            wait_until(lambda: len(self.ops) > i, what=f"subscribe {i}")
            self.ack()


class FakeGateway:
    def __init__(self, executions=()):
        self.calls: list[str] = []
        self.executions = list(executions)
        self.execution_ranges: list[tuple] = []
        self._lock = threading.Lock()

    def _call(self, name):
        with self._lock:
            self.calls.append(name)

    def get_wallet(self):
        self._call("get_wallet")
        return Wallet.from_ws(sample("4.13-private-wallet-2.json"))[0]

    def get_open_positions(self):
        self._call("get_open_positions")
        return []

    def get_positions(self, symbols):
        self._call("get_positions")
        return {s: Position(symbol=s, size=Decimal(0)) for s in symbols}

    def get_open_orders(self):
        self._call("get_open_orders")
        return []

    def get_executions(self, *, start_ms=None, end_ms=None):
        self._call("get_executions")
        self.execution_ranges.append((start_ms, end_ms))
        assert start_ms is not None and (end_ms is None or start_ms <= end_ms)
        return list(self.executions)


class StorePeer:
    """The StateStore as a mocked peer: records tells, answers snapshot asks from a LiveState."""

    def __init__(self):
        self.told = []
        self.state = LiveState()
        self._lock = threading.Lock()

    def tell(self, message):
        with self._lock:
            self.told.append(message)

    def ask(self, message, timeout=None):
        assert isinstance(message, GetSnapshot)
        return self.state.snapshot()

    def kinds(self):
        with self._lock:
            return [m for m in self.told if not isinstance(m, PrivatePulse)]


@pytest.fixture
def rig(write_config):
    app = load_config(write_config("private_ws:\n  reconnect_backoff_s: 0.01\n  auth_timeout_s: 3\n"))
    directory, store = Directory(), StorePeer()
    directory.register(Role.STATE_STORE, store)
    sockets: list[FakeSocket] = []
    gateway = FakeGateway()

    def factory(ctx, **hooks):
        sock = FakeSocket(**hooks)
        sockets.append(sock)
        return sock

    def start():
        ctx = ActorContext(config=app, directory=directory, urls=URLS, gateway=gateway, generation=2)
        return WsPrivate.start(ctx, socket_factory=factory)

    start.directory = directory
    return start, sockets, store, gateway


def _connect(sockets, index):
    sock = wait_until(lambda: len(sockets) > index and sockets[index], what=f"socket {index}")
    return sock


def _started_with(write_config, store, gateway, clock) -> list[FakeSocket]:
    """A WsPrivate over `store` and `gateway` whose clock is `clock`, through its first auth and acks."""
    app = load_config(write_config("private_ws:\n  reconnect_backoff_s: 0.01\n  auth_timeout_s: 3\n"))
    directory, sockets = Directory(), []
    directory.register(Role.STATE_STORE, store)

    def factory(ctx, **hooks):
        sockets.append(FakeSocket(**hooks))
        return sockets[-1]

    ctx = ActorContext(config=app, directory=directory, urls=URLS, gateway=gateway, generation=0)
    WsPrivate.start(ctx, socket_factory=factory, clock=clock)
    _connect(sockets, 0).auth(ok=True)
    sockets[0].ack_all()
    return sockets


def test_subscribes_only_after_the_auth_answer_then_reseeds(rig):
    start, sockets, store, gateway = rig
    ref = start()
    sock = _connect(sockets, 0)
    # Connected, auth sent by pybit, no answer yet: nothing subscribed, nothing read.
    threading.Event().wait(0.2)  # time enough for a wrong implementation to subscribe
    assert sock.ops == [] and gateway.calls == []
    sock.auth(ok=True)
    wait_until(lambda: len(sock.ops) == 1, what="account subscribe")
    sock.ack()
    wait_until(lambda: len(sock.ops) == 2, what="dcp subscribe")
    assert sock.ops == [("subscribe", list(ACCOUNT_TOPICS)), ("subscribe", [DCP_TOPIC])]
    assert gateway.calls == []  # the reseed waits for the acks too
    sock.ack()
    reseed = wait_until(lambda: next((m for m in store.kinds() if isinstance(m, AccountReseed)), None), what="reseed")
    statuses = [m for m in store.kinds() if isinstance(m, SocketStatus)]
    assert [s.connected for s in statuses] == [True]
    assert store.kinds().index(statuses[0]) < store.kinds().index(reseed)
    assert {"get_wallet", "get_positions", "get_open_orders", "get_executions"} <= set(gateway.calls)
    assert ref.is_alive()


def test_a_lost_socket_is_reopened_authenticated_and_reseeded(rig):
    start, sockets, store, gateway = rig
    start()
    first = _connect(sockets, 0)
    first.auth()
    first.ack_all()
    wait_until(lambda: any(isinstance(m, AccountReseed) for m in store.kinds()), what="first reseed")
    gateway.executions = [Execution.from_ws(sample("4.12-private-execution-2.json"))[0]]

    first.on_down("Connection to remote host was lost")
    second = _connect(sockets, 1)
    assert first.closed
    threading.Event().wait(0.2)  # time enough for a wrong implementation to subscribe
    assert second.ops == []  # again: nothing before the auth answer
    second.auth()
    second.ack_all()
    wait_until(lambda: sum(isinstance(m, AccountReseed) for m in store.kinds()) == 2, what="second reseed")
    seq = [("status", m.connected) if isinstance(m, SocketStatus) else ("reseed", len(m.executions))
           for m in store.kinds()]
    assert seq == [("status", True), ("reseed", 0), ("status", False), ("status", True), ("reseed", 1)]
    # A late frame of the old connection never reaches state.
    before = len(store.told)
    first.on_frame(sample("4.12-private-execution-2.json"))
    assert len(store.told) == before


def test_refused_auth_fails_the_start_with_the_venues_reason(rig, events):
    start, sockets, store, gateway = rig
    ref = start()
    sock = _connect(sockets, 0)
    sock.auth(ok=False, reason="Invalid apikey")
    wait_until(lambda: not ref.is_alive(), what="actor stopped")
    assert sock.ops == [] and sock.closed and gateway.calls == []
    failed = [e for e in events() if e["event"] == "ws.auth_failed"]
    assert failed and failed[0]["reason"] == "Invalid apikey"
    with pytest.raises(pykka.ActorDeadError):
        ref.tell(GetSnapshot())


def test_an_account_without_dcp_still_gets_its_account_topics(rig, events):
    start, sockets, store, gateway = rig
    ref = start()
    sock = _connect(sockets, 0)
    sock.auth()
    wait_until(lambda: len(sock.ops) == 1)
    sock.ack()
    wait_until(lambda: len(sock.ops) == 2)
    sock.ack(ok=False, reason="permission denied")
    status = wait_until(lambda: next((m for m in store.kinds() if isinstance(m, SocketStatus)), None))
    assert status.connected and status.topics == ACCOUNT_TOPICS and ref.is_alive()
    assert [e["reason"] for e in events() if e["event"] == "ws.dcp_subscribe_failed"] == ["permission denied"]


def test_refused_account_topics_close_the_socket_and_fail_the_start(rig, events):
    start, sockets, store, gateway = rig
    ref = start()
    sock = _connect(sockets, 0)
    sock.auth()
    wait_until(lambda: len(sock.ops) == 1)
    sock.ack(ok=False, reason="Request not authorized")
    wait_until(lambda: not ref.is_alive(), what="actor stopped")
    assert sock.closed and len(sock.ops) == 1 and gateway.calls == []
    assert [e["reason"] for e in events() if e["event"] == "ws.subscribe_failed"] == ["Request not authorized"]


def test_a_retired_generation_closes_its_socket_and_drops_late_frames(rig):
    start, sockets, store, gateway = rig
    start()
    sock = _connect(sockets, 0)
    sock.auth()
    sock.ack_all()
    wait_until(lambda: any(isinstance(m, AccountReseed) for m in store.kinds()), what="reseed")
    for hook in start.directory.retire(Role.WS_PRIVATE, 2):  # what the Supervisor does when it replaces a stuck actor
        hook()
    assert sock.closed
    before = len(store.told)
    sock.on_frame(sample("4.12-private-execution-2.json"))
    assert len(store.told) == before


def test_a_last_execution_stamped_after_our_clock_does_not_break_the_reseed(write_config):
    """Our clock behind the venue's: the range from the last execution seen is ended by the venue, not by us."""
    from datetime import timedelta, timezone

    store, gateway = StorePeer(), FakeGateway()
    execution = Execution.from_ws(sample("4.12-private-execution-2.json"))[0]
    store.state.on_execution(execution)
    behind = execution.exec_time.astimezone(timezone.utc) - timedelta(seconds=30)
    _started_with(write_config, store, gateway, lambda: behind)
    wait_until(lambda: any(isinstance(m, AccountReseed) for m in store.kinds()), what="reseed despite the skew")
    (start_ms, end_ms), = gateway.execution_ranges
    assert end_ms is None and start_ms < int(execution.exec_time.timestamp() * 1000)


def test_the_reseed_dates_its_read_by_the_venues_clock_not_ours(write_config):
    """`requested_at` is compared with the venue's order and position times: an open order the
    REST read does not list is dropped as gone if it is older than the read. Stamped by our
    clock 5 s ahead of the venue's, an order placed just after the read was sent (so not in its
    answer) looked older than the read and was dropped: a live resting order the node no longer
    knew it had (nothing to cancel on a panic, wrong exposure)."""
    from datetime import datetime, timedelta, timezone

    from infra.bybit.models import ServerTime
    from messages import Order

    venue_now = datetime(2026, 1, 5, 12, 0, 0, tzinfo=timezone.utc)
    ours = venue_now + timedelta(seconds=5)

    class VenueClockGateway(FakeGateway):
        def server_time(self):
            self._call("server_time")
            return ServerTime(server_ms=int(venue_now.timestamp() * 1000), skew_ms=-5_000, round_trip_ms=2)

    store, gateway = StorePeer(), VenueClockGateway()
    item = json.loads((SAMPLES / "3.8-get-v5-order-realtime-1.json").read_text())["result"]["list"][0]
    placed_ms = str(int((venue_now + timedelta(seconds=1)).timestamp() * 1000))  # after the read was sent
    streamed = Order.from_bybit({**item, "orderStatus": "New", "createdTime": placed_ms, "updatedTime": placed_ms})
    store.state.on_order(streamed)
    _started_with(write_config, store, gateway, lambda: ours)
    wait_until(lambda: any(isinstance(m, AccountReseed) for m in store.kinds()), what="the reseed")
    (reseed,) = [m for m in store.kinds() if isinstance(m, AccountReseed)]
    assert reseed.requested_at == venue_now
    store.state.on_reseed(reseed)
    assert list(store.state.open_orders) == [streamed.order_id]
