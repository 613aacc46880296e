"""The node as an operator runs it: a real process, real signals, the JSON log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from actors.base import START_ORDER
from tests.conftest import REPO
from tests.helpers import read_events, wait_until

pytestmark = pytest.mark.timeout(60)


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYBIT_")}
    env.update({"BYBIT_NODE_DATA_DIR": str(tmp_path / "data"), "BYBIT_NODE_LOG__CONSOLE": "plain"}, **extra)
    return env


def _start(tmp_path, *args, **env):
    return subprocess.Popen(
        [sys.executable, str(REPO / "main.py"), *args],
        cwd=REPO,
        env=_env(tmp_path, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _log(tmp_path):
    return tmp_path / "data" / "logs" / "node.jsonl"


def _names(events):
    return [e["event"] for e in events]


def _stopped_children(events):
    return [e["child"] for e in events if e["event"] == "supervisor.child_stopped"]


def test_duration_run_exits_zero_and_stops_children_in_reverse(tmp_path):
    proc = _start(tmp_path, "run", "--duration", "3")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    events = read_events(_log(tmp_path))
    names = _names(events)
    assert names.index("node.started") < names.index("node.stopping") < names.index("node.stopped")
    assert next(e for e in events if e["event"] == "node.stopping")["reason"] == "duration"
    started = [e["child"] for e in events if e["event"] == "supervisor.child_started"]
    assert started == [r.value for r in START_ORDER]
    assert _stopped_children(events) == [r.value for r in reversed(START_ORDER)]
    assert "Traceback" not in err


def test_a_running_node_rotates_its_log_and_a_command_beside_it_does_not(tmp_path):
    """At 4 KB a file (start-up alone logs several times that), every line of the run is kept
    across the files, in order; a `sync` run next appends to the current file without rotating."""
    env = {"BYBIT_NODE_LOG__FILE_MAX_MB": "0.004", "BYBIT_NODE_LOG__FILE_BACKUPS": "100"}
    proc = _start(tmp_path, "run", "--duration", "3", **env)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    logs = _log(tmp_path).parent
    old = sorted((p for p in logs.iterdir() if p.name.startswith("node.jsonl.")), key=lambda p: -int(p.suffix[1:]))
    assert len(old) >= 2, sorted(p.name for p in logs.iterdir())
    names = _names([e for f in [*old, _log(tmp_path)] for e in read_events(f)])
    assert names[0] == "node.starting" and names[-1] == "node.stopped"
    assert names.index("node.started") < names.index("node.stopping")
    assert all(f.stat().st_size < 8_192 for f in old)
    with _log(tmp_path).open("a") as current:  # past the size: a rotating writer would start a new file
        current.write('{"event": "test.filler", "pad": "%s"}\n' % ("x" * 8_192))
    files_before, size_before = sorted(p.name for p in logs.iterdir()), _log(tmp_path).stat().st_size
    sync = _start(tmp_path, "sync", "--days", "1", **env)
    _, err = sync.communicate(timeout=60)
    assert sync.returncode == 0, err
    assert sorted(p.name for p in logs.iterdir()) == files_before
    assert _log(tmp_path).stat().st_size > size_before  # it did log, to the current file


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_node_gracefully_within_five_seconds(tmp_path, sig):
    proc = _start(tmp_path)  # no command: `run` is the default
    wait_until(lambda: "node.started" in _names(read_events(_log(tmp_path))), timeout=20, what="node.started")
    sent = time.monotonic()
    proc.send_signal(sig)
    proc.communicate(timeout=10)
    assert time.monotonic() - sent < 5
    assert proc.returncode == 0
    events = read_events(_log(tmp_path))
    assert next(e for e in events if e["event"] == "node.stopping")["reason"] == sig.name
    assert _names(events)[-1] == "node.stopped"
    assert _stopped_children(events) == [r.value for r in reversed(START_ORDER)]


def test_an_orderly_stop_halts_trading_first_and_reports_no_stale_data(tmp_path):
    """Before any child stops, Panic halts trading ("node stopping"); the sockets going down
    after that are the stop, not a data fault, so no REDUCING 'data stale' is logged.
    The example strategy is off: an order still in flight at the stop is a real warning."""
    proc = _start(tmp_path, BYBIT_NODE_STRATEGY__ENABLED="false")
    try:
        wait_until(lambda: any(e["event"] == "trading.state_changed" and e["state"] == "ACTIVE"
                               for e in read_events(_log(tmp_path))), timeout=30, what="trading ACTIVE")
        # The start-up catch-up runs beside the node (it no longer holds up the start): a stop
        # before it ends is rightly a warning (db.catch_up stopped=true), not the routine stop here.
        wait_until(lambda: "db.catch_up" in _names(read_events(_log(tmp_path))), timeout=30, what="the catch-up")
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    events = read_events(_log(tmp_path))
    names = _names(events)
    after = [e for e in events[names.index("node.stopping"):] if e["event"] == "trading.state_changed"]
    assert [(e["previous"], e["state"]) for e in after] == [("ACTIVE", "HALTED")], after
    assert after[0]["reason"].startswith("node stopping") and after[0]["level"] == "info"
    # The stop is routine: nothing after node.stopping is a warning or an error.
    loud = [e for e in events[names.index("node.stopping"):] if e["level"] in ("warning", "error", "critical")]
    assert loud == [], loud


@pytest.mark.parametrize(
    ("env", "field"),
    [
        # A value from the environment is named by its variable, then the field it sets.
        ({"BYBIT_NODE_RISK__MAX_LEVERAGE": "-1"}, "$BYBIT_NODE_RISK__MAX_LEVERAGE (risk.max_leverage)"),
        ({"BYBIT_NODE_VENUE": "testnet"}, "$BYBIT_API_KEY"),
        ({"BYBIT_NODE_TRADING_MODE": "live"}, "$BYBIT_NODE_TRADING_MODE (trading_mode)"),
        ({"BYBIT_NODE_NO_SUCH_THING": "1"}, "$BYBIT_NODE_NO_SUCH_THING"),
    ],
)
def test_bad_config_exits_2_naming_the_field_without_a_traceback(tmp_path, env, field):
    proc = _start(tmp_path, "run", "--duration", "1", **env)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert f"  - {field}: " in err
    assert "Traceback" not in err and "Traceback" not in out
    assert not _log(tmp_path).exists()  # nothing started, nothing written


def test_unknown_config_file_exits_2(tmp_path):
    proc = _start(tmp_path, "--config", str(tmp_path / "nope.yaml"))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "no such file" in err


def test_help_explains_commands_config_and_exit_codes(tmp_path):
    proc = _start(tmp_path, "--help")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    for needle in ("run", "--config", "BYBIT_NODE_", "BYBIT_API_KEY", "exit codes", "simulator"):
        assert needle in out
    proc = _start(tmp_path, "run", "--help")
    out, _ = proc.communicate(timeout=30)
    assert "--duration" in out and "second Ctrl-C" in out


def test_make_run_comes_up_and_ctrl_c_brings_it_down(tmp_path):
    """The README's command, interrupted as a terminal would: SIGINT to the whole foreground group."""
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=REPO,
        env=_env(tmp_path),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: "node.started" in _names(read_events(_log(tmp_path))), timeout=40, what="node.started")
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=10)
        assert time.monotonic() - sent < 5
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stopped = [e for e in read_events(_log(tmp_path)) if e["event"] == "node.stopped"]
    assert len(stopped) == 1 and stopped[0]["exit_code"] == 0


def test_live_start_with_a_failed_preflight_is_refused_before_any_actor(tmp_path, sim):
    """Mainnet + live + confirmed, but the REST host is not Bybit's: the preflight refuses the start."""
    from tests.integration.conftest import SIM_KEY, SIM_SECRET

    proc = _start(
        tmp_path, "run", "--duration", "5",
        BYBIT_NODE_VENUE="mainnet", BYBIT_NODE_TRADING_MODE="live", BYBIT_NODE_LIVE_CONFIRMED="true",
        BYBIT_NODE_EXCHANGE__REST_URL=sim.urls.rest, BYBIT_API_KEY=SIM_KEY, BYBIT_API_SECRET=SIM_SECRET,
    )
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "REFUSED" in err
    events = read_events(_log(tmp_path))
    refused = next(e for e in events if e["event"] == "node.live_start_refused")
    assert refused["failed"]  # the report names each failed check
    assert "supervisor.child_started" not in _names(events)  # nothing ran
    assert SIM_SECRET not in _log(tmp_path).read_text() and SIM_SECRET not in err


def test_unreachable_venue_refuses_the_start(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _start(tmp_path, "run", "--duration", "5", BYBIT_NODE_EXCHANGE__REST_URL=f"http://127.0.0.1:{port}",
                  BYBIT_NODE_EXCHANGE__READ_ATTEMPTS="1")
    proc.communicate(timeout=60)
    assert proc.returncode == 1
    events = read_events(_log(tmp_path))
    assert "node.venue_unreachable" in _names(events)
    assert "supervisor.child_started" not in _names(events)


def test_after_a_crash_the_next_start_heals_the_missing_range(tmp_path):
    """SIGKILL a running node, lose its newest bars, start again: the history has no hole."""
    from infra.store import BarRange, HistoryStore
    from messages.types import align_ms

    db = tmp_path / "data" / "sim.duckdb"
    first = _start(tmp_path)
    # The catch-up runs after node.started, on the DbWriter's thread: wait for the history to exist.
    wait_until(lambda: "db.catch_up" in _names(read_events(_log(tmp_path))), timeout=30, what="first catch-up")
    first.kill()  # SIGKILL: no drain, no goodbye
    first.wait(timeout=10)

    store = HistoryStore(db)
    with store.session() as s:
        before = s.count("BTCUSDT", "1")
        # The crash also cost the last 90 minutes that were never written.
        s.conn.execute(
            "DELETE FROM ohlcv WHERE symbol = 'BTCUSDT' AND interval = '1' "
            "AND open_time > (SELECT max(open_time) FROM ohlcv WHERE symbol = 'BTCUSDT' AND interval = '1') "
            "- INTERVAL 90 MINUTE"
        )
        lost = before - s.count("BTCUSDT", "1")
    store.close()
    assert before >= 1000 and lost == 90

    # Its catch-up runs after this instant, so it must reach at least the bar closed by then.
    newest_closed = align_ms("1", int(time.time() * 1000)) - 60_000
    second = _start(tmp_path, "run", "--duration", "2")
    second.communicate(timeout=60)
    assert second.returncode == 0
    store = HistoryStore(db)
    with store.session() as s:
        newest = max(b.open_ms for b in s.bars("BTCUSDT", "1"))
        day = BarRange(newest - 24 * 3600_000 + 60_000, newest + 60_000)
        assert s.gaps("BTCUSDT", "1", within=day) == []
        assert s.count("BTCUSDT", "1") >= before
    store.close()
    assert newest >= newest_closed


def test_the_node_can_use_a_simulator_running_elsewhere(tmp_path, sim_factory):
    """README: `python -m infra.sim ...`, then point the node at it with its REST URL alone."""
    sim = sim_factory(api_key="sim-api-key", api_secret="sim-api-secret")  # the sim section's pair
    proc = _start(tmp_path, "run", "--duration", "2", BYBIT_NODE_EXCHANGE__REST_URL=sim.urls.rest)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    connected = {e["url"] for e in read_events(_log(tmp_path)) if e["event"] == "ws.connected"}
    assert connected == {sim.urls.ws_public, sim.urls.ws_private}
    assert "sim.started" not in _names(read_events(_log(tmp_path)))  # no second simulator


def test_start_caps_venue_leverage_at_the_risk_limit(tmp_path):
    proc = _start(tmp_path, "run", "--duration", "1", BYBIT_NODE_RISK__MAX_LEVERAGE="3")
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    events = read_events(_log(tmp_path))
    lowered = {e["symbol"]: e["leverage"] for e in events if e["event"] == "gateway.leverage_set"}
    assert lowered == {"BTCUSDT": "3", "ETHUSDT": "3"}
    names = _names(events)
    assert names.index("gateway.leverage_set") < names.index("supervisor.child_started")  # before any actor
    assert next(e for e in events if e["event"] == "node.started")["may_trade"] is True


def test_a_second_node_on_the_same_data_dir_is_refused_naming_the_first(tmp_path):
    first = _start(tmp_path, "run", "--duration", "30")
    try:
        wait_until(lambda: "node.started" in _names(read_events(_log(tmp_path))), timeout=30, what="first node up")
        second = _start(tmp_path, "run", "--duration", "5")
        out, err = second.communicate(timeout=30)
        assert second.returncode == 1
        assert f"pid {first.pid}" in err and "Traceback" not in err
        refused = [e for e in read_events(_log(tmp_path)) if e["event"] == "node.already_running"]
        assert refused and refused[0]["pid"] == first.pid
        assert first.poll() is None  # the first node is untouched
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    assert first.returncode == 0


def test_running_pid_sees_a_node_only_while_it_runs(tmp_path):
    from infra.presence import running_pid

    data = tmp_path / "data"
    assert running_pid(data, "sim") is None
    assert not data.exists()  # asking creates nothing
    proc = _start(tmp_path, "run", "--duration", "30")
    try:
        wait_until(lambda: running_pid(data, "sim") == proc.pid, timeout=30, what="node holds its presence lock")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert running_pid(data, "sim") is None  # a killed node does not look alive
