"""WsPublic with a fake socket and mocked peers: the desired set, reconnects, removals, the seam."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from actors.base import ActorContext, Directory, Role
from actors.ws_public import PublicFrameRouter, WsPublic
from infra.bybit.clients import VenueUrls
from infra.config import load_config
from messages.commands import Subscribe, Unsubscribe
from messages.control import SocketStatus
from messages.market import BarSource, ClosedBar, Kline, MarketDataPending, Ticker
from messages.subscriptions import DesiredSubscriptions
from messages.types import ms_to_utc
from tests.helpers import wait_until

URLS = VenueUrls(rest="http://127.0.0.1:9", ws_public="ws://127.0.0.1:9/pub", ws_private="ws://127.0.0.1:9/priv")
T0 = 1_700_000_040_000 - 1_700_000_040_000 % 60_000  # a minute boundary


class Peer:
    """A mocked peer: records what it is told (thread-safe). Like the StateStore, it drains the
    market messages WsPublic queues in its inbox (`MarketDataPending`) and records each of them."""

    def __init__(self):
        self.told = []
        self._lock = threading.Lock()

    def tell(self, message):
        with self._lock:
            if isinstance(message, MarketDataPending):
                while items := message.inbox.take():
                    self.told.extend(items)
            else:
                self.told.append(message)

    def of(self, kind):
        with self._lock:
            return [m for m in self.told if isinstance(m, kind)]


class FakeSocket:
    """Stands in for ManagedWebSocket: records ops; the test connects and drops it."""

    def __init__(self, urls, on_frame, on_up, on_down, on_garbage):
        self.on_frame, self.on_up, self.on_down, self.on_garbage = on_frame, on_up, on_down, on_garbage
        self.ops: list[tuple[str, tuple[str, ...]]] = []
        self.epoch = 0
        self.connected = False
        self.reconnecting = False
        self.closed = False
        self.connect()  # like pybit: connected when the constructor returns

    def connect(self):
        self.connected = True
        self.epoch += 1
        self.on_up(self.epoch)

    def drop(self):
        self.connected = False
        self.on_down("ConnectionResetError()")

    def is_connected(self):
        return self.connected

    def send_op(self, op, args):
        if not self.connected:
            return False
        self.ops.append((op, tuple(args)))
        return True

    def close(self):
        self.closed = True
        self.connected = False


class Sockets:
    """The factory WsPublic is given: every socket it built."""

    def __init__(self):
        self.made: list[FakeSocket] = []

    def __call__(self, urls, **hooks):
        sock = FakeSocket(urls, **hooks)
        self.made.append(sock)
        return sock

    @property
    def current(self) -> FakeSocket:
        # WsPublic.start returns before on_start (which builds the socket) has run on the actor.
        wait_until(lambda: self.made, what="the actor's first socket")
        return self.made[-1]


def carried(sock: FakeSocket, since: int = 0) -> set[str]:
    out: set[str] = set()
    for op, args in sock.ops[since:]:
        if op == "subscribe":
            out |= set(args)
        else:
            out -= set(args)
    return out


class Gateway:
    """A mocked gateway: serves closed bars of a flat market, newest first like Bybit."""

    def __init__(self):
        self.calls = []

    def fetch_klines(self, symbol, interval, start_ms, end_ms, limit=1000):
        self.calls.append((symbol, interval, start_ms, end_ms))
        opens = list(range(start_ms - start_ms % 60_000, end_ms + 1, 60_000))[-limit:]
        return [bar(symbol, o, BarSource.REST) for o in reversed(opens) if o >= start_ms]


def bar(symbol, open_ms, source=BarSource.WS):
    return ClosedBar(symbol=symbol, interval="1", open_time=ms_to_utc(open_ms), open=Decimal(1), high=Decimal(1),
                     low=Decimal(1), close=Decimal(1), volume=Decimal(0), turnover=Decimal(0), source=source)


def kline_frame(symbol, open_ms, confirm=True):
    return {"topic": f"kline.1.{symbol}", "type": "snapshot", "ts": open_ms + 60_000, "data": [{
        "start": open_ms, "end": open_ms + 59_999, "interval": "1", "open": "1", "close": "1", "high": "1",
        "low": "1", "volume": "0", "turnover": "0", "confirm": confirm, "timestamp": open_ms + 59_999}]}


def ticker_frame(symbol, kind="snapshot", **data):
    body = {"symbol": symbol, **data}
    if kind == "snapshot":
        body.update({"lastPrice": "100", "markPrice": "100", "indexPrice": "100"})
    return {"topic": f"tickers.{symbol}", "type": kind, "data": body, "cs": 1, "ts": T0}


@pytest.fixture
def app(write_config):
    return load_config(write_config(
        "symbols:\n  BTCUSDT:\n    intervals: ['1', '5']\n  ETHUSDT:\n    intervals: ['1']\n    tickers: false\n"
    ))


@pytest.fixture
def directory():
    return Directory()


@pytest.fixture
def node(app, directory):
    store, writer = Peer(), Peer()
    directory.register(Role.STATE_STORE, store)
    directory.register(Role.DB_WRITER, writer)
    sockets = Sockets()
    gateway = Gateway()
    desired = DesiredSubscriptions.from_config(app.node.symbols)
    ctx = ActorContext(config=app, directory=directory, urls=URLS, gateway=gateway, subscriptions=desired)
    ref = WsPublic.start(ctx, socket_factory=sockets)
    directory.register(Role.WS_PUBLIC, ref)
    yield ref, sockets, store, writer, gateway
    ref.stop(block=True, timeout=5)


DESIRED = {"tickers.BTCUSDT", "kline.1.BTCUSDT", "kline.5.BTCUSDT", "kline.1.ETHUSDT"}


def test_subscribes_exactly_the_desired_set_and_reports_it(node):
    _, sockets, store, _, _ = node
    wait_until(lambda: sockets.current.ops, what="subscribe op")
    [(op, topics)] = sockets.current.ops
    assert op == "subscribe" and set(topics) == DESIRED and len(topics) == len(DESIRED)
    status = wait_until(lambda: store.of(SocketStatus), what="socket status")[-1]
    assert status.connected and status.socket == "public" and set(status.topics) == DESIRED


def test_reconnect_replays_the_whole_desired_set_with_runtime_changes(node):
    ref, sockets, store, _, _ = node
    sock = sockets.current
    wait_until(lambda: sock.ops, what="first subscribe")
    desired = DesiredSubscriptions.from_config({}).subscribe(Subscribe(symbol="BTCUSDT", intervals=("1", "5")))
    desired = desired.subscribe(Subscribe(symbol="SOLUSDT", intervals=("15",)))  # runtime-added
    ref.tell(desired)  # ETHUSDT removed at runtime
    wait_until(lambda: len(sock.ops) >= 3, what="runtime ops")
    assert ("subscribe", ("tickers.SOLUSDT", "kline.15.SOLUSDT")) in sock.ops
    assert ("unsubscribe", ("kline.1.ETHUSDT",)) in sock.ops
    mark = len(sock.ops)
    sock.drop()
    wait_until(lambda: any(not s.connected for s in store.of(SocketStatus)), what="disconnected status")
    sock.connect()  # pybit's own reconnect
    wait_until(lambda: len(sock.ops) > mark, what="replay")
    expected = {"tickers.BTCUSDT", "kline.1.BTCUSDT", "kline.5.BTCUSDT", "tickers.SOLUSDT", "kline.15.SOLUSDT"}
    assert carried(sock, mark) == expected and sock.ops[mark][0] == "subscribe"
    assert "kline.1.ETHUSDT" not in sock.ops[mark][1]


def test_subscribe_while_disconnected_is_sent_with_the_next_connection(node):
    ref, sockets, _, _, _ = node
    sock = sockets.current
    wait_until(lambda: sock.ops, what="first subscribe")
    sock.drop()
    ref.ask(DesiredSubscriptions.from_config({}).subscribe(Subscribe(symbol="SOLUSDT", intervals=("1",))),
            timeout=5)
    assert len(sock.ops) == 1  # nothing sent into a dead socket
    sock.connect()
    wait_until(lambda: len(sock.ops) == 2, what="replay")
    assert sock.ops[1] == ("subscribe", ("tickers.SOLUSDT", "kline.1.SOLUSDT"))


def test_subscribe_and_unsubscribe_told_to_ws_public_go_to_the_supervisor_first(app):
    supervisor = Peer()
    directory = Directory()
    ctx = ActorContext(config=app, directory=directory, urls=URLS, supervisor=supervisor,
                       subscriptions=DesiredSubscriptions.from_config(app.node.symbols))
    sockets = Sockets()
    ref = WsPublic.start(ctx, socket_factory=sockets)
    try:
        ref.ask(Unsubscribe(symbol="ETHUSDT"), timeout=5)
        assert supervisor.told == [Unsubscribe(symbol="ETHUSDT")]
        assert all(op == "subscribe" for op, _ in sockets.current.ops)  # the socket waits for the new set
    finally:
        ref.stop(block=True, timeout=5)


def test_a_socket_dead_without_a_word_from_pybit_is_reported_and_rebuilt(node):
    ref, sockets, store, _, _ = node
    first = sockets.current
    wait_until(lambda: first.ops, what="first subscribe")
    first.connected = False  # pybit's thread ended; no on_error, no reconnect
    wait_until(lambda: len(sockets.made) == 2, timeout=10, what="rebuilt socket")
    assert first.closed
    wait_until(lambda: sockets.current.ops, what="subscribe on the new socket")
    assert set(sockets.current.ops[0][1]) == DESIRED
    statuses = store.of(SocketStatus)
    assert any(not s.connected for s in statuses) and statuses[-1].connected


def test_a_gap_in_closed_bars_is_fetched_and_delivered_before_the_bar_after_it(node):
    ref, sockets, store, writer, gateway = node
    sock = sockets.current
    wait_until(lambda: sock.ops, what="subscribed")
    sock.on_frame(kline_frame("ETHUSDT", T0))
    sock.on_frame(kline_frame("ETHUSDT", T0 + 60_000))
    sock.on_frame(kline_frame("ETHUSDT", T0 + 5 * 60_000))  # after an outage: three bars missing
    expected = [T0 + i * 60_000 for i in range(6)]
    wait_until(lambda: sorted(b.open_ms for b in writer.of(ClosedBar)) == expected, what="bars at the writer")
    closed_at_store = [m.closed_bar() if isinstance(m, Kline) else m for m in store.told
                       if isinstance(m, ClosedBar) or (isinstance(m, Kline) and m.confirm)]
    assert [b.open_ms for b in closed_at_store] == expected  # in time order: the buffer keeps them all
    assert [b.source for b in closed_at_store[2:5]] == ["rest"] * 3
    assert gateway.calls == [("ETHUSDT", "1", T0 + 2 * 60_000, T0 + 5 * 60_000 - 1)]


def test_router_rejects_and_counts_malformed_frames_while_good_ones_flow():
    directory = Directory()
    store, writer = Peer(), Peer()
    directory.register(Role.STATE_STORE, store)
    directory.register(Role.DB_WRITER, writer)
    router = PublicFrameRouter(directory, 1, ("tickers.BTCUSDT", "kline.1.BTCUSDT"))
    router.on_frame(ticker_frame("BTCUSDT"))
    bad = [
        {"topic": "tickers.BTCUSDT", "type": "snapshot", "data": {"symbol": "BTCUSDT"}, "cs": 1, "ts": T0},
        {"topic": "tickers.BTCUSDT", "type": "delta", "data": {"symbol": "BTCUSDT", "lastPrice": {"x": 1}}, "ts": T0},
        {"topic": "kline.1.BTCUSDT", "type": "snapshot", "ts": T0, "data": [{"interval": "1", "confirm": False}]},
        dict(kline_frame("BTCUSDT", T0), data=[dict(kline_frame("BTCUSDT", T0)["data"][0], start="soon")]),
        {"topic": "tickers.NOSUCHUSDT", "type": "snapshot", "data": {"symbol": "NOSUCHUSDT"}, "ts": T0},
        {"no": "topic"},
    ]
    for i, frame in enumerate(bad):
        router.on_frame(frame)
        router.on_frame(ticker_frame("BTCUSDT", "delta", bid1Size=str(i + 1)))
    router.on_garbage("not JSON", "this is not json")
    router.on_frame(kline_frame("BTCUSDT", T0))
    assert router.counts["rejected"] == len(bad) + 1
    tickers = [m for m in store.told if isinstance(m, Ticker)]
    assert len(tickers) == 1 + len(bad) and [t.bid1_size for t in tickers[1:]] == [Decimal(i + 1) for i in range(6)]
    assert [b.open_ms for b in writer.of(ClosedBar)] == [T0]


def test_router_counts_frames_of_a_removed_topic_apart_from_malformed_ones():
    directory = Directory()
    store = Peer()
    directory.register(Role.STATE_STORE, store)
    router = PublicFrameRouter(directory, 1, ("tickers.BTCUSDT",))
    router.topics, router.removed = frozenset(), frozenset({"tickers.BTCUSDT"})
    router.on_frame(ticker_frame("BTCUSDT"))
    assert store.told == [] and router.counts["unsubscribed"] == 1 and router.counts["rejected"] == 0


def test_a_failed_subscribe_ack_is_counted_and_logged(events):
    router = PublicFrameRouter(Directory(), 1, ())
    router.on_frame({"success": False, "ret_msg": "error:handler not found", "op": "subscribe", "req_id": "x"})
    assert router.counts["acks_failed"] == 1
    assert any(e["event"] == "ws.subscribe_failed" for e in events())


def test_a_generation_retired_in_the_directory_drops_frames_and_closes_its_socket(node, directory):
    ref, sockets, store, _, _ = node
    sock = sockets.current
    wait_until(lambda: sock.ops, what="subscribed")
    sock.on_frame(ticker_frame("BTCUSDT"))
    hooks = directory.retire(Role.WS_PUBLIC, 0)  # what the Supervisor does to a stuck child
    for hook in hooks:
        hook()
    sock.on_frame(ticker_frame("BTCUSDT"))
    assert len(store.of(Ticker)) == 1 and sock.closed


def start_with_gateway(app, gateway, *, store=None, generation=0):
    """A subscribed WsPublic (`generation` > 0: a replacement) over peer StateStore and DbWriter."""
    directory = Directory()
    store, writer, sockets = store or Peer(), Peer(), Sockets()
    directory.register(Role.STATE_STORE, store)
    directory.register(Role.DB_WRITER, writer)
    ctx = ActorContext(config=app, directory=directory, urls=URLS, gateway=gateway, generation=generation,
                       subscriptions=DesiredSubscriptions.from_config(app.node.symbols))
    ref = WsPublic.start(ctx, socket_factory=sockets)
    directory.register(Role.WS_PUBLIC, ref)
    wait_until(lambda: sockets.current.ops, what="subscribed")
    return ref, sockets.current, store, writer


class SnapshotStore(Peer):
    """A StateStore peer that also answers GetSnapshot with a bar buffer."""

    def __init__(self, last_open_ms):
        super().__init__()
        self.last_open_ms = last_open_ms

    def ask(self, query, timeout=None):
        class Snap:
            bars = {("ETHUSDT", "1"): (bar("ETHUSDT", self.last_open_ms),)}
        return Snap()


def test_a_replacement_heals_the_seam_across_its_restart(app):
    gateway = Gateway()
    ref, sock, _, writer = start_with_gateway(app, gateway, store=SnapshotStore(T0), generation=1)
    try:
        sock.on_frame(kline_frame("ETHUSDT", T0 + 3 * 60_000))  # the predecessor saw T0 last
        wait_until(lambda: len(writer.of(ClosedBar)) == 3, what="the two missing bars and the new one")
        assert gateway.calls == [("ETHUSDT", "1", T0 + 60_000, T0 + 3 * 60_000 - 1)]
    finally:
        ref.stop(block=True, timeout=5)


class FlakyGateway(Gateway):
    """Fails the first `failures` calls, like a venue having a bad moment."""

    def __init__(self, failures):
        super().__init__()
        self.failures = failures

    def fetch_klines(self, *args, **kwargs):
        if self.failures > 0:
            self.failures -= 1
            self.calls.append(("failed",))
            raise ConnectionError("venue unreachable")
        return super().fetch_klines(*args, **kwargs)


def test_a_seam_fetch_that_fails_once_is_retried(app):
    gateway = FlakyGateway(failures=1)
    ref, sock, store, writer = start_with_gateway(app, gateway)
    try:
        sock.on_frame(kline_frame("ETHUSDT", T0))
        sock.on_frame(kline_frame("ETHUSDT", T0 + 3 * 60_000))
        wait_until(lambda: len(writer.of(ClosedBar)) == 4, what="healed after a retry")
        assert gateway.calls[0] == ("failed",) and len(gateway.calls) == 2
    finally:
        ref.stop(block=True, timeout=5)


def test_a_seam_that_cannot_be_fetched_is_logged_and_the_bar_after_it_still_delivered(app, events):
    gateway = FlakyGateway(failures=1000)
    ref, sock, store, writer = start_with_gateway(app, gateway)
    try:
        sock.on_frame(kline_frame("ETHUSDT", T0))
        sock.on_frame(kline_frame("ETHUSDT", T0 + 3 * 60_000))
        wait_until(lambda: [k for k in store.of(Kline) if k.confirm and k.start == ms_to_utc(T0 + 3 * 60_000)],
                   timeout=20, what="the parked bar delivered")
        failed = [e for e in events() if e["event"] == "ws.seam_heal_failed"]
        assert len(failed) == 1 and failed[0]["fetched"] == 0 and "unreachable" in failed[0]["error"]
        assert len(writer.of(ClosedBar)) == 2  # the two WS bars; the hole is named in the log
    finally:
        ref.stop(block=True, timeout=5)


def test_a_long_outage_is_fetched_page_by_page(app):
    gateway = Gateway()
    ref, sock, store, writer = start_with_gateway(app, gateway)
    try:
        sock.on_frame(kline_frame("ETHUSDT", T0))
        sock.on_frame(kline_frame("ETHUSDT", T0 + 2500 * 60_000))  # 2499 bars missing: three pages
        wait_until(lambda: len(writer.of(ClosedBar)) == 2501, timeout=20, what="every missing bar")
        assert len(gateway.calls) == 3

        def closed():  # the StateStore's bars, as told: the last one follows the seam's pages
            return [m.closed_bar() if isinstance(m, Kline) else m for m in list(store.told)
                    if isinstance(m, ClosedBar) or (isinstance(m, Kline) and m.confirm)]

        wait_until(lambda: len(closed()) == 2501, timeout=20, what="every bar told to the StateStore")
        assert [b.open_ms for b in closed()] == [T0 + i * 60_000 for i in range(2501)]
    finally:
        ref.stop(block=True, timeout=5)


def test_router_counts_are_logged_periodically(write_config, events):
    app = load_config(write_config("log:\n  metrics_interval_s: 1\n"))
    ref, sock, _, _ = start_with_gateway(app, Gateway())
    try:
        sock.on_frame({"topic": "tickers.NOSUCHUSDT", "type": "snapshot", "data": {}, "ts": T0})
        stats = wait_until(lambda: [e for e in events() if e["event"] == "ws.public_stats" and e["rejected"] == 1],
                           timeout=10, what="a stats line")
        assert stats[-1]["connected"] is True and stats[-1]["frames"] == 1
    finally:
        ref.stop(block=True, timeout=5)


class GatedGateway(Gateway):
    """Holds the seam fetch until the test opens the gate: a venue slow to answer after an outage."""

    def __init__(self):
        super().__init__()
        self.entered, self.gate = threading.Event(), threading.Event()

    def fetch_klines(self, *args, **kwargs):
        self.entered.set()
        assert self.gate.wait(10), "the test never opened the gate"
        return super().fetch_klines(*args, **kwargs)


def test_a_bar_closing_while_its_seam_is_still_being_fetched_waits_behind_the_seam(app):
    """After an outage every series has a seam to fetch, one after the other on this actor's
    thread, from a venue that is slow just then. A series' next bar can close before its seam
    is fetched: delivered at once, it reached the StateStore before the seam's bars and the
    parked one, which its buffer then refused as out of order, a hole in the bars every
    strategy reads for as long as the node runs."""
    gateway = GatedGateway()
    ref, sock, store, writer = start_with_gateway(app, gateway)
    try:
        sock.on_frame(kline_frame("ETHUSDT", T0))
        sock.on_frame(kline_frame("ETHUSDT", T0 + 3 * 60_000))  # two bars missing: fetched, slowly
        assert gateway.entered.wait(10)
        sock.on_frame(kline_frame("ETHUSDT", T0 + 4 * 60_000, confirm=False))
        sock.on_frame(kline_frame("ETHUSDT", T0 + 4 * 60_000))  # the next bar closes meanwhile
        gateway.gate.set()
        expected = [T0 + i * 60_000 for i in range(5)]
        wait_until(lambda: len([m for m in store.told if isinstance(m, ClosedBar)
                                or (isinstance(m, Kline) and m.confirm)]) == 5,
                   what="every closed bar at the state store")
        closed_at_store = [m.closed_bar() if isinstance(m, Kline) else m for m in store.told
                           if isinstance(m, ClosedBar) or (isinstance(m, Kline) and m.confirm)]
        assert [b.open_ms for b in closed_at_store] == expected
        kinds = [(m.start, m.confirm) for m in store.told if isinstance(m, Kline)]
        # The running update of the next bar also waited behind the seam's parked bar.
        assert kinds.index((ms_to_utc(T0 + 4 * 60_000), False)) > kinds.index((ms_to_utc(T0 + 3 * 60_000), True))
    finally:
        gateway.gate.set()
        ref.stop(block=True, timeout=5)


def test_a_replacement_after_a_state_store_restart_heals_the_seam_from_the_history(app):
    """A StateStore that failed is restarted empty, and the sockets with it (its dependents): the
    new WsPublic's StateStore knows no bar, so a bar that closed while the sockets were swapped
    (its confirm frame went with the old socket) was never noticed: a hole in the history
    file for as long as the node runs. The file knows where the series stopped."""
    from infra.store import HistoryStore

    with HistoryStore.for_node(app.node).session() as s:
        s.write_bars([bar("ETHUSDT", T0 - 60_000), bar("ETHUSDT", T0)])
    store, gateway = SnapshotStore(T0), Gateway()
    store.ask = lambda query, timeout=None: type("Snap", (), {"bars": {}})()  # a new, empty StateStore
    ref, sock, _, writer = start_with_gateway(app, gateway, store=store, generation=2)
    try:
        sock.on_frame(kline_frame("ETHUSDT", T0 + 2 * 60_000))  # T0 + 1 closed during the swap
        wait_until(lambda: len(writer.of(ClosedBar)) == 2, what="the missing bar and the new one")
        assert gateway.calls == [("ETHUSDT", "1", T0 + 60_000, T0 + 2 * 60_000 - 1)]
    finally:
        ref.stop(block=True, timeout=5)


def test_a_seam_found_before_the_supervisor_registered_the_actor_is_still_healed(app):
    """The Supervisor registers a new WsPublic in the directory only once it answered its first
    Ping, but the socket opened (and may deliver) in on_start. A BarGap told through the
    directory then went nowhere: the seam was never fetched and the closed bar after it never
    reached the StateStore. The router's gaps belong to its own actor, whoever is registered."""
    directory = Directory()
    store, writer, gateway, sockets = Peer(), Peer(), Gateway(), Sockets()
    directory.register(Role.STATE_STORE, store)
    directory.register(Role.DB_WRITER, writer)
    ctx = ActorContext(config=app, directory=directory, urls=URLS, gateway=gateway,
                       subscriptions=DesiredSubscriptions.from_config(app.node.symbols))
    ref = WsPublic.start(ctx, socket_factory=sockets)  # not registered (yet)
    try:
        wait_until(lambda: sockets.current.ops, what="subscribed")
        sockets.current.on_frame(kline_frame("ETHUSDT", T0))
        sockets.current.on_frame(kline_frame("ETHUSDT", T0 + 3 * 60_000))
        wait_until(lambda: len([k for k in store.of(Kline) if k.confirm]) == 2, what="both closed bars at the state")
        assert gateway.calls == [("ETHUSDT", "1", T0 + 60_000, T0 + 3 * 60_000 - 1)]
        assert [b.open_ms for b in store.of(ClosedBar)] == [T0 + 60_000, T0 + 2 * 60_000]
    finally:
        ref.stop(block=True, timeout=5)
