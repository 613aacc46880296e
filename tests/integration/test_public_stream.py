"""The public stream against the simulator: snapshot first on the wire, and the whole node
surviving dropped sockets, a venue that sends a delta first, and malformed frames, with the
desired set replayed and the bars of an outage healed into DuckDB."""

from __future__ import annotations

import json

import pytest
from websocket import create_connection

from actors.base import Directory, Role
from actors.supervisor import Supervisor
from actors.tree import default_children
from infra.bybit.clients import make_http, make_managed_public_ws
from infra.bybit.gateway import Gateway
from infra.config import load_config
from infra.sim import WallClock
from infra.store import HistoryStore
from infra.store.ranges import BarRange
from messages.commands import Subscribe, Unsubscribe
from messages.control import Ping
from messages.queries import GetHealth, GetSnapshot
from tests.helpers import wait_until
from tests.integration.conftest import SIM_KEY, SIM_SECRET

pytestmark = pytest.mark.timeout(90)

MIN = 60_000


# --- the simulator at the wire level ---------------------------------------------------------

def _first_frame_per_topic(ws, topics):
    first = {}
    while len(first) < len(topics):
        frame = json.loads(ws.recv())
        topic = frame.get("topic")
        if topic in topics and topic not in first:
            first[topic] = frame["type"]
    return first


def test_every_new_ticker_subscription_starts_with_its_snapshot(sim_factory):
    sim = sim_factory(clock=WallClock())
    topics = ["tickers.BTCUSDT", "tickers.ETHUSDT"]
    keeper = create_connection(sim.urls.ws_public, timeout=5)  # keeps deltas flowing the whole time
    try:
        keeper.send(json.dumps({"op": "subscribe", "req_id": "keep", "args": topics}))
        _first_frame_per_topic(keeper, topics)
        wait_until(lambda: json.loads(keeper.recv()).get("type") == "delta", timeout=5, what="deltas flowing")
        for i in range(8):
            ws = create_connection(sim.urls.ws_public, timeout=5)
            try:
                ws.send(json.dumps({"op": "subscribe", "req_id": f"n{i}", "args": topics}))
                assert _first_frame_per_topic(ws, topics) == dict.fromkeys(topics, "snapshot")
                # and again on the same connection, after an unsubscribe
                ws.send(json.dumps({"op": "unsubscribe", "req_id": f"u{i}", "args": topics}))
                ws.send(json.dumps({"op": "subscribe", "req_id": f"r{i}", "args": topics}))
                while json.loads(ws.recv()).get("req_id") != f"r{i}":
                    pass
                assert _first_frame_per_topic(ws, topics) == dict.fromkeys(topics, "snapshot")
            finally:
                ws.close()
    finally:
        keeper.close()


def test_load_switches_mix_ticker_floods_and_malformed_frames_into_the_feed(sim_factory):
    sim = sim_factory(clock=WallClock())
    ws = create_connection(sim.urls.ws_public, timeout=5)
    try:
        ws.send(json.dumps({"op": "subscribe", "req_id": "a", "args": ["tickers.BTCUSDT"]}))
        _first_frame_per_topic(ws, ["tickers.BTCUSDT"])
        sim.faults.ticker_rate(per_s=2000)
        sim.faults.malformed_rate(per_s=100)
        deltas = bad = 0
        while deltas < 1000:
            text = ws.recv()
            try:
                frame = json.loads(text)
                good = frame.get("topic") == "tickers.BTCUSDT" and frame["type"] == "delta" and isinstance(
                    frame["data"].get("lastPrice", ""), str)
            except (ValueError, AttributeError):
                good = False
            deltas += good
            bad += not good
        sim.faults.clear()
        assert 20 <= bad <= 200  # about 100/s among 2000/s
    finally:
        ws.close()


# --- the whole node --------------------------------------------------------------------------

@pytest.fixture
def venue(sim_factory):
    return sim_factory(symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"])


@pytest.fixture
def node(venue, write_config):
    app = load_config(write_config(
        "symbols:\n  BTCUSDT:\n    intervals: ['1']\n  ETHUSDT:\n    intervals: ['1']\n"
        "db_writer:\n  catch_up_days: 0\n"
        f"sim:\n  api_key: {SIM_KEY}\n  api_secret: {SIM_SECRET}\n"
    ))
    gateway = Gateway.from_config(app, venue.urls)
    directory = Directory()
    supervisor = Supervisor.start(app, directory, default_children(), urls=venue.urls, gateway=gateway)
    supervisor.ask(Ping(), timeout=30)
    wait_until(lambda: {"BTCUSDT", "ETHUSDT"} <= set(snapshot(directory).tickers), timeout=10, what="tickers")
    yield app, directory, supervisor
    if supervisor.is_alive():
        supervisor.stop(block=True, timeout=15)
    gateway.close()


def snapshot(directory):
    return directory.get(Role.STATE_STORE).ask(GetSnapshot(), timeout=5)


def public_conns(sim):
    return sim.call(lambda ex: [(c.conn_id, set(c.topics)) for c in ex.connections(("public",))])


def reconnected_with(sim, before_id, topics):
    """Wait for a public connection other than `before_id` that carries exactly `topics`."""
    return wait_until(
        lambda: [cid for cid, t in public_conns(sim) if cid != before_id and t == topics],
        timeout=20, what=f"a new public connection carrying {sorted(topics)}",
    )[0]


def test_after_a_drop_every_desired_stream_delivers_and_a_removed_one_does_not(venue, node):
    _, directory, supervisor = node
    # ETH must have delivered on both its streams first: what "stays gone" is compared against.
    wait_until(lambda: {"tickers.ETHUSDT", "kline.1.ETHUSDT"} <= set(snapshot(directory).received_at), timeout=10,
               what="both ETH streams delivering before the unsubscribe")
    supervisor.tell(Subscribe(symbol="SOLUSDT", intervals=("1",)))
    supervisor.tell(Unsubscribe(symbol="ETHUSDT"))
    desired = {"tickers.BTCUSDT", "kline.1.BTCUSDT", "tickers.SOLUSDT", "kline.1.SOLUSDT"}
    first = wait_until(lambda: [c for c, t in public_conns(venue) if t == desired], timeout=10,
                       what="runtime changes on the socket")[0]
    wait_until(lambda: "SOLUSDT" in snapshot(directory).tickers, timeout=10, what="SOL ticker")

    assert venue.faults.drop_sockets("public") == 1
    reconnected_with(venue, first, desired)
    before = snapshot(directory).received_at
    venue.clock.advance(60)  # tickers for every subscribed symbol, and a closing 1m bar
    after = wait_until(
        lambda: (r := snapshot(directory).received_at) and all(r.get(t, 0) > before.get(t, 0) for t in desired) and r,
        timeout=10, what="every desired stream delivering after the reconnect",
    )
    assert after["tickers.ETHUSDT"] == before["tickers.ETHUSDT"]
    assert after["kline.1.ETHUSDT"] == before["kline.1.ETHUSDT"]


def test_a_venue_sending_a_delta_before_the_snapshot_does_not_end_the_feed(venue, node):
    _, directory, _ = node
    topics = {"tickers.BTCUSDT", "kline.1.BTCUSDT", "tickers.ETHUSDT", "kline.1.ETHUSDT"}
    for _ in range(2):
        [(conn, _)] = public_conns(venue)
        venue.faults.delta_before_snapshot(2)  # what killed pybit's stream (its own ticker merge)
        venue.faults.drop_sockets("public")
        reconnected_with(venue, conn, topics)
        before = snapshot(directory).received_at
        venue.clock.advance(60)
        wait_until(lambda: all(snapshot(directory).received_at[t] > before[t] for t in topics), timeout=10,
                   what="the feed after a delta-first resubscription")
    assert venue.call(lambda ex: ex.faults.state.deltas_first) == 0  # the fault was really served


def test_bars_closed_during_an_outage_are_in_duckdb_after_the_seam_heals(venue, sim_creds, node):
    app, directory, supervisor = node
    venue.clock.advance(120)
    wait_until(lambda: len(snapshot(directory).bars.get(("BTCUSDT", "1"), ())) >= 2, timeout=10, what="closed bars")
    [(conn, topics)] = public_conns(venue)
    venue.faults.refuse_connections(2.0)
    venue.faults.drop_sockets("public")
    wait_until(lambda: not public_conns(venue), timeout=5, what="the public socket gone")
    venue.clock.advance(5 * 60)  # five bars close with nobody listening
    reconnected_with(venue, conn, topics)
    venue.clock.advance(60)  # the first bar after the reconnect shows the hole

    def contiguous(key):
        bars = snapshot(directory).bars.get(key, ())
        opens = [b.open_ms for b in bars]
        return len(opens) >= 8 and opens == list(range(opens[0], opens[0] + len(opens) * MIN, MIN)) and opens

    spans = {key: wait_until(lambda k=key: contiguous(k), timeout=15, what=f"{key} contiguous in memory")
             for key in (("BTCUSDT", "1"), ("ETHUSDT", "1"))}
    supervisor.stop(block=True, timeout=15)  # the DbWriter drains
    store = HistoryStore.for_node(app.node, owner="test")
    try:
        with store.session() as s:
            for (symbol, interval), opens in spans.items():
                stored = [b.open_ms for b in s.bars(symbol, interval, within=BarRange(opens[0], opens[-1] + MIN))]
                rows = make_http(venue.urls, sim_creds).get_kline(category="linear", symbol=symbol, interval=interval, start=opens[0],
                                          end=opens[-1])["result"]["list"]
                assert stored == opens == sorted(int(r[0]) for r in rows)
                healed = [b for b in s.bars(symbol, interval) if b.source == "rest"]
                assert len(healed) == 5
    finally:
        store.close()


def test_malformed_frames_are_rejected_and_counted_while_good_frames_flow(venue, events, node):
    _, directory, _ = node
    [(conn, _)] = public_conns(venue)
    kinds = ["missing_fields", "wrong_types", "unknown_topic", "not_json", "truncated", "delta_before_snapshot",
             "bad_pong"]
    for kind in kinds:
        venue.faults.malformed_frames("public", kind)
        before = snapshot(directory).received_at["tickers.BTCUSDT"]
        venue.clock.advance(1)
        wait_until(lambda: snapshot(directory).received_at["tickers.BTCUSDT"] > before, timeout=5,
                   what=f"good frames after {kind}")
    rejected = [e for e in events() if e["event"] == "ws.frame_rejected"]
    assert len(rejected) == len(kinds) and max(e["rejected"] for e in rejected) == len(kinds)
    assert [c for c, _ in public_conns(venue)] == [conn]  # never reconnected
    assert not [e for e in events() if e["event"] == "ws.disconnected"]


def test_the_node_socket_outlasts_a_refusal_that_makes_pybit_give_up(sim, events):
    """pybit's own loop makes 10 attempts milliseconds apart and gives up (test_sim_faults); ours backs off."""
    ups, downs, frames = [], [], []
    ws = make_managed_public_ws(sim.urls, on_frame=frames.append, on_up=ups.append, on_down=downs.append,
                                backoff_s=(0.05, 0.5))
    try:
        assert ups == [1]
        sim.faults.refuse_connections(2.5)
        sim.faults.drop_sockets("public")
        wait_until(lambda: ups == [1, 2], timeout=20, what="reconnected after the refusal")
        retries = [e for e in events() if e["event"] == "ws.connect_retry"]
        assert len(downs) == 1 and len(retries) >= 3
        assert retries[-1]["wait_s"] > retries[0]["wait_s"]  # backing off, not hammering
        assert all("no longer try" not in r["error"] for r in retries)  # the attempt's cause, not pybit's text
        assert ws.send_op("subscribe", ["tickers.BTCUSDT"])
        wait_until(lambda: any(f.get("topic") == "tickers.BTCUSDT" for f in frames), what="frames again")
    finally:
        ws.close()


def test_a_replaced_ws_public_carries_the_runtime_desired_set(venue, node):
    _, directory, supervisor = node
    supervisor.tell(Subscribe(symbol="SOLUSDT", intervals=("5",), tickers=False))
    supervisor.tell(Unsubscribe(symbol="ETHUSDT", intervals=("1",), tickers=False))
    desired = {"tickers.BTCUSDT", "kline.1.BTCUSDT", "tickers.ETHUSDT", "kline.5.SOLUSDT"}
    first = wait_until(lambda: [c for c, t in public_conns(venue) if t == desired], timeout=10,
                       what="runtime changes on the socket")[0]
    directory.get(Role.WS_PUBLIC).stop(block=True, timeout=10)  # gone: the Supervisor must notice and replace it
    wait_until(lambda: supervisor.proxy().generation(Role.WS_PUBLIC).get(timeout=5) == 1, timeout=20,
               what="a new WsPublic generation")
    assert reconnected_with(venue, first, desired)
    wait_until(lambda: len(public_conns(venue)) == 1, timeout=10, what="the old socket closed")


def test_a_lost_public_socket_shows_as_disconnected_in_health_until_it_is_back(venue, node):
    _, directory, _ = node
    health = lambda: directory.get(Role.STATE_STORE).ask(GetHealth(), timeout=5)  # noqa: E731
    wait_until(lambda: health().streams.get("tickers.BTCUSDT") and health().streams["tickers.BTCUSDT"].connected,
               timeout=10, what="public streams connected")
    [(conn, topics)] = public_conns(venue)
    venue.faults.refuse_connections(2.0)
    venue.faults.drop_sockets("public")
    down = wait_until(lambda: not (h := health()).streams["tickers.BTCUSDT"].connected and h, timeout=5,
                      what="the outage seen in health")
    assert not down.ready and all(not down.streams[t].connected for t in topics)
    reconnected_with(venue, conn, topics)
    wait_until(lambda: all(health().streams[t].connected for t in topics), timeout=10, what="connected again")
