"""Live state against the simulator: the private seam heals over REST, silence is seen as staleness."""

from __future__ import annotations

import time
from contextlib import closing
from datetime import datetime
from decimal import Decimal

import pytest

from actors.base import Directory, Role
from actors.supervisor import Supervisor
from actors.tree import default_children
from infra.bybit.gateway import Gateway
from infra.config import load_config
from infra.sim import WallClock
from messages.control import Ping
from messages.queries import GetHealth, GetSnapshot
from tests.helpers import wait_until
from tests.integration.conftest import SIM_KEY, SIM_SECRET

pytestmark = pytest.mark.timeout(90)


def _config(write_config, extra: str = ""):
    return load_config(write_config(
        "symbols:\n  BTCUSDT:\n    intervals: ['1']\n"
        f"sim:\n  api_key: {SIM_KEY}\n  api_secret: {SIM_SECRET}\n" + extra
    ))


def _start(app, sim):
    directory = Directory()
    gateway = Gateway.from_config(app, sim.urls)
    supervisor = Supervisor.start(app, directory, default_children(), urls=sim.urls, gateway=gateway)
    supervisor.ask(Ping(), timeout=30)
    return directory, supervisor, gateway


def _ask(directory, message):
    return directory.get(Role.STATE_STORE).ask(message, timeout=5)


def test_an_order_filled_while_the_private_socket_is_down_is_in_state_after_the_reseed(sim, sim_http, write_config,
                                                                                       events):
    # A 5 s back-off holds the socket down long enough to fill an order with nobody listening.
    app = _config(write_config, "private_ws:\n  reconnect_backoff_s: 5\n")
    directory, supervisor, gateway = _start(app, sim)
    try:
        wait_until(lambda: _ask(directory, GetHealth()).private_seam_healed, timeout=15, what="first reseed")
        assert sim.faults.drop_sockets(channel="private") == 1
        wait_until(lambda: not _ask(directory, GetHealth()).streams["private"].connected, timeout=5,
                   what="private socket seen down")
        assert sim.call(lambda ex: ex.connections(("private",))) == []  # really nobody listening
        sim_http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.01",
                             orderLinkId="filled-in-the-dark")
        assert sim.call(lambda ex: ex.connections(("private",))) == []  # its pushes went nowhere
        snap = wait_until(
            lambda: (s := _ask(directory, GetSnapshot())) and any(
                e.order_link_id == "filled-in-the-dark" for e in s.recent_executions) and s,
            timeout=20, what="the missed fill, reseeded")
        pos = snap.positions[("BTCUSDT", 0)]
        assert pos.size == Decimal("0.01") and str(pos.side) == "Buy"
        health = _ask(directory, GetHealth())
        assert health.private_seam_healed and health.streams["private"].connected
        reseeds = [e for e in events() if e["event"] == "state.reseeded"]
        assert len(reseeds) == 2 and reseeds[-1]["new_fills"] == 1  # the fill came by REST, not the stream
        names = [e["event"] for e in events()]
        assert names.index("ws.disconnected") < len(names) - 1 - names[::-1].index("ws.connected")
    finally:
        supervisor.stop(block=True, timeout=15)
        gateway.close()


def test_silence_makes_the_public_streams_stale_within_the_window(sim_factory, write_config):
    sim = sim_factory(clock=WallClock())
    app = _config(write_config, "supervisor:\n  check_interval_s: 0.1\n  public_stale_after_s: 2\n"
                                "  private_stale_after_s: 9\n")
    directory, supervisor, gateway = _start(app, sim)
    try:
        wait_until(lambda: _ask(directory, GetHealth()).ready, timeout=20, what="ready")
        silenced = time.monotonic()
        sim.faults.go_silent(channel="public")
        health = wait_until(lambda: (h := _ask(directory, GetHealth())) and not h.ready and h, timeout=10,
                            what="not ready")
        took = time.monotonic() - silenced
        assert health.stale_streams and set(health.stale_streams) <= {"tickers.BTCUSDT", "kline.1.BTCUSDT"}
        # Not before the 2 s window (less the last frame's head start); soon after it (a tick, a loaded host).
        assert 1.0 < took < 2 + 2.5
        # Klines push less often than tickers: theirs is the window plus one push period.
        health = wait_until(lambda: (h := _ask(directory, GetHealth())) and len(h.stale_streams) == 2 and h,
                            timeout=5, what="both streams stale")
        took = time.monotonic() - silenced
        assert took < 2 + 4.0
        sim.faults.end_silence(channel="public")
    finally:
        supervisor.stop(block=True, timeout=15)
        gateway.close()


def test_a_quiet_account_stays_fresh_but_a_silent_private_socket_goes_stale(sim_factory, write_config):
    sim = sim_factory(clock=WallClock())
    # A 6 s window: pybit pings every 2 s, and each pong keeps the quiet socket fresh.
    app = _config(write_config, "supervisor:\n  check_interval_s: 0.1\n  private_stale_after_s: 6\n")
    directory, supervisor, gateway = _start(app, sim)
    try:
        wait_until(lambda: _ask(directory, GetHealth()).ready, timeout=20, what="ready")
        wait_until(lambda: _ask(directory, GetHealth()).streams["private"].frames >= 3, timeout=15,
                   what="pongs on a quiet account")
        assert _ask(directory, GetHealth()).ready
        sim.faults.go_silent(channel="private")
        health = wait_until(lambda: (h := _ask(directory, GetHealth())) and "private" in h.stale_streams and h,
                            timeout=15, what="private stale")
        assert not health.ready
    finally:
        supervisor.stop(block=True, timeout=15)
        gateway.close()


def test_a_refused_private_auth_fails_the_start_with_the_venues_reason(sim, write_config, events):
    app = load_config(write_config(
        "symbols:\n  BTCUSDT:\n    intervals: ['1']\n"
        f"sim:\n  api_key: not-{SIM_KEY}\n  api_secret: {SIM_SECRET}\n"
    ))
    supervisor = Supervisor.start(app, Directory(), default_children(), urls=sim.urls)
    with pytest.raises(Exception):
        supervisor.ask(Ping(), timeout=30)
    failed = [e for e in events() if e["event"] == "ws.auth_failed"]
    assert len(failed) == 1 and failed[0]["reason"] == "Invalid apikey"
    assert any(e["event"] == "supervisor.start_failed" and e["child"] == "ws_private" for e in events())


def test_a_late_auth_answer_is_waited_for(sim, write_config, events):
    sim.faults.delay_private_auth(1.5)
    app = _config(write_config)
    directory, supervisor, gateway = _start(app, sim)
    try:
        wait_until(lambda: _ask(directory, GetHealth()).private_seam_healed, timeout=15, what="reseed")
        names = [e["event"] for e in events()]
        # The private socket counts as connected only after the (late) auth answer and the acks.
        connected = next(e for e in events() if e["event"] == "ws.connected" and e.get("role") == "ws_private")
        opened = next(e for e in events() if e["event"] == "sim.ws.connected" and e["channel"] == "private")
        gap = (datetime.fromisoformat(connected["ts"]) - datetime.fromisoformat(opened["ts"])).total_seconds()
        assert gap >= 1.5 and "ws.auth_failed" not in names
    finally:
        supervisor.stop(block=True, timeout=15)
        gateway.close()


def test_market_reader_falls_back_to_one_rest_read_on_the_simulator(sim, write_config):
    from actors.base import ActorContext
    from actors.state_store import StateStore
    from infra.market_reader import LiveMarketReader

    app = _config(write_config)
    directory = Directory()
    directory.register(Role.STATE_STORE, StateStore.start(ActorContext(config=app, directory=directory)))
    with closing(Gateway.from_config(app, sim.urls)) as gateway:
        reader = LiveMarketReader.from_config(app.node, lambda: directory.get(Role.STATE_STORE), gateway)
        quote = reader.quote("BTCUSDT")  # the StateStore holds no ticker: REST
        rest = gateway.get_ticker("BTCUSDT")  # the manual clock holds the market still
        assert quote.source == "rest" and quote.last_price == rest.last_price and quote.funding_rate is not None
        again = reader.quote("BTCUSDT")
        assert again.source == "rest" and again.age_s >= quote.age_s  # served from the cache


def test_malformed_public_frames_are_rejected_and_counted_per_stream_while_good_ones_flow(sim_factory, write_config,
                                                                                        events):
    sim = sim_factory(clock=WallClock())
    app = _config(write_config)
    directory, supervisor, gateway = _start(app, sim)
    try:
        wait_until(lambda: _ask(directory, GetHealth()).ready, timeout=20, what="ready")
        before = _ask(directory, GetHealth()).streams["tickers.BTCUSDT"].frames
        sim.faults.ticker_rate(per_s=200)
        # In turn: a bad ticker delta, not JSON, not UTF-8, a bad kline, ... The frames that are not
        # JSON (or not text) name no topic: they are charged to the public socket's own line. The
        # socket must live through all of them (websocket-client's own UTF-8 check would drop it).
        sim.faults.malformed_rate(per_s=90, kinds=["wrong_types", "not_json", "bad_utf8"])

        def counted():
            h = _ask(directory, GetHealth())
            t, k, socket = h.streams["tickers.BTCUSDT"], h.streams["kline.1.BTCUSDT"], h.streams["public"]
            unattributed = socket.rejected - t.rejected - k.rejected
            return t.rejected >= 5 and k.rejected >= 5 and unattributed >= 5 and t.frames >= before + 200 and h

        health = wait_until(counted, timeout=20, what="refusals counted per stream while good frames flow")
        sim.faults.clear()
        assert health.ready and not health.stale_streams  # the bad frames cost nothing but their count
        assert not [e for e in events() if e["event"] == "ws.disconnected"]  # one connection throughout
    finally:
        supervisor.stop(block=True, timeout=15)
        gateway.close()


def test_garbage_on_the_private_socket_is_counted_and_the_socket_lives(sim, sim_http, write_config, events):
    app = _config(write_config)
    directory, supervisor, gateway = _start(app, sim)
    try:
        wait_until(lambda: _ask(directory, GetHealth()).private_seam_healed, timeout=15, what="reseed")
        # bad_utf8: websocket-client's own UTF-8 check is off on the node's sockets (BytesFrames);
        # json.loads refuses the bytes instead, and the socket must live on as for any bad frame.
        for kind in ("not_json", "truncated", "unknown_topic", "bad_pong", "bad_utf8"):
            assert sim.faults.malformed_frames(channel="private", kind=kind) == 1
        sim_http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.01",
                             orderLinkId="after-the-garbage")
        wait_until(lambda: any(e.order_link_id == "after-the-garbage"
                               for e in _ask(directory, GetSnapshot()).recent_executions),
                   timeout=10, what="the fill, streamed on the same socket")
        assert "ws.disconnected" not in [e["event"] for e in events()]
        rejected = [e for e in events() if e["event"] == "ws.frame_rejected" and e.get("role") == "ws_private"]
        assert len(rejected) >= 4  # not JSON (three times) and the unknown topic; the odd pong is a pong
        assert any("\ufffd" in " ".join(e.get("reasons", [])) for e in rejected), rejected  # the bad bytes, shown
        # ... and counted where health and `status` show it: the private stream.
        wait_until(lambda: _ask(directory, GetHealth()).streams["private"].rejected >= 4, timeout=5,
                   what="the refusals in the private stream's health")
    finally:
        supervisor.stop(block=True, timeout=15)
        gateway.close()


def test_a_funding_payment_is_kept_as_funding_never_as_a_fill(sim, sim_http, write_config, events):
    from infra.sim.market import FUNDING_MS

    app = _config(write_config)
    directory, supervisor, gateway = _start(app, sim)
    try:
        wait_until(lambda: _ask(directory, GetHealth()).private_seam_healed, timeout=15, what="reseed")
        sim_http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.01",
                             orderLinkId="pays-funding")
        wait_until(lambda: _ask(directory, GetSnapshot()).recent_executions, timeout=10, what="the fill")
        now = sim.clock.now_ms()
        sim.clock.advance(((now // FUNDING_MS + 1) * FUNDING_MS - now) / 1000 + 1)  # past the next funding time
        snap = wait_until(lambda: (s := _ask(directory, GetSnapshot())) and s.other_executions and s, timeout=20,
                          what="the funding execution")
        (funding,) = snap.other_executions
        assert funding.exec_type == "Funding" and funding.symbol == "BTCUSDT" and not funding.is_trade
        assert [e.order_link_id for e in snap.recent_executions] == ["pays-funding"]
        assert [e["exec_type"] for e in events() if e["event"] == "state.account_execution"] == ["Funding"]
    finally:
        supervisor.stop(block=True, timeout=15)
        gateway.close()


def test_an_execution_pushed_twice_is_one_fill(sim, sim_http, write_config):
    app = _config(write_config)
    directory, supervisor, gateway = _start(app, sim)
    try:
        wait_until(lambda: _ask(directory, GetHealth()).private_seam_healed, timeout=15, what="reseed")
        sim.faults.duplicate_next_execution(1)
        sim_http.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.01",
                             orderLinkId="pushed-twice")
        wait_until(lambda: _ask(directory, GetHealth()).streams["execution"].frames >= 2, timeout=10,
                   what="both copies of the execution push")
        snap = _ask(directory, GetSnapshot())
        assert [e.order_link_id for e in snap.recent_executions] == ["pushed-twice"]
    finally:
        supervisor.stop(block=True, timeout=15)
        gateway.close()


def test_refused_reconnects_are_retried_until_the_venue_takes_them(sim, write_config, events):
    app = _config(write_config, "private_ws:\n  reconnect_backoff_s: 0.2\n  reconnect_backoff_max_s: 0.5\n")
    directory, supervisor, gateway = _start(app, sim)
    try:
        wait_until(lambda: _ask(directory, GetHealth()).private_seam_healed, timeout=15, what="first reseed")
        sim.faults.refuse_connections(2.0)
        sim.faults.drop_sockets(channel="private")
        wait_until(lambda: sum(e["event"] == "ws.connect_failed" for e in events()) >= 2, timeout=10,
                   what="refused attempts")
        assert not _ask(directory, GetHealth()).ready
        wait_until(lambda: (h := _ask(directory, GetHealth())).private_seam_healed and h.streams["private"].connected,
                   timeout=15, what="reconnected and reseeded")
        assert sum(e["event"] == "state.reseeded" for e in events()) == 2
    finally:
        supervisor.stop(block=True, timeout=15)
        gateway.close()
