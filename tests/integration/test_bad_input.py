"""Every bad input a user can give, through the real command line: one clear answer each.

A table, so the list grows as new cases are found. Each case runs `main.py`
in a subprocess (as a user would) and checks:

* the exit code: 2 configuration, 1 failure, 130 interrupt, 0 fine;
* the answer: the phrases it must contain, and no traceback, as one
  paragraph (no blank line inside what is printed on stderr);
* the files: nothing outside `may_write` is created, changed or removed
  (bytes and mtime of every file under the test's directory, before/after).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import REPO
from tests.helpers import read_events, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

LOGS = ("data", "data/logs", "data/logs/node.jsonl")
STORE_LOCK = ("data/sim.duckdb.lock",)
NODE_LOCK = ("data/run", "data/run/*")
RISK = ("risk:\n  max_daily_loss_usd: 100\n  max_position_usd: 1000\n  max_total_exposure_usd: 2000\n"
        "  max_open_positions: 2\n  max_leverage: 5\n  max_price_deviation_pct: 1.0\n  min_balance_usd: 50\n")


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    code: int
    says: tuple[str, ...]
    config: str | None = None  # None: the repository's config.yaml; else this text (data_dir added)
    raw_config: bool = False  # write `config` exactly as given (no data_dir line)
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None
    may_write: tuple[str, ...] = ()
    not_says: tuple[str, ...] = ()


def _corrupt_history(root: Path) -> None:
    (root / "data").mkdir()
    # DuckDB's header garbled: what a disk error or a stray `>` leaves behind.
    (root / "data" / "sim.duckdb").write_bytes(b"not a duckdb file" + bytes(range(256)) * 64)


def _data_dir_is_a_file(root: Path) -> None:
    (root / "data").write_text("oops\n")


def _log_file_is_a_directory(root: Path) -> None:
    (root / "data" / "logs" / "node.jsonl").mkdir(parents=True)


def _lock_file_is_a_directory(root: Path) -> None:
    from infra.store import HistoryStore

    store = HistoryStore(root / "data" / "sim.duckdb")
    store.write_bars([])  # a valid, empty history
    store.close()
    (root / "data" / "sim.duckdb.lock").unlink()
    (root / "data" / "sim.duckdb.lock").mkdir()  # what a stray mkdir or a broken restore leaves


CORRUPT = ("is not a readable history file", "data/sim.duckdb", "Move it aside", "sync --days N")

CASES = [
    # --- configuration: exit 2, every bad field named --------------------------------------
    Case("typo", ("gaps",), 2, ("risk.max_levrage: unknown setting",), config="risk:\n  max_levrage: 3\n"),
    Case("wrong-type", ("gaps",), 2, ("risk.max_open_positions", "'many'"),
         config="risk:\n  max_open_positions: many\n"),
    Case("negative", ("gaps",), 2, ("supervisor.max_restarts", "greater than or equal to 1"),
         config="supervisor:\n  max_restarts: -1\n"),
    Case("interval-7", ("gaps",), 2, ("symbols.BTCUSDT.intervals.0", "(got '7')"),
         config="symbols:\n  BTCUSDT:\n    intervals: ['7']\n", not_says=("Tuple should",)),
    Case("missing-file", ("--config", "nope.yaml", "gaps"), 2, ("nope.yaml", "no such file")),
    Case("yaml-error", ("gaps",), 2, ("not valid YAML", "line 3"), config="venue: sim\n  oops: [\n"),
    Case("empty-file", ("run", "--duration", "1"), 2, ("config.yaml", "the file is empty"), config="",
         raw_config=True),
    Case("comments-only", ("gaps",), 2, ("the file is empty",), config="# nothing here\n", raw_config=True),
    Case("symbols-env-not-json", ("run", "--duration", "1"), 2, ("$BYBIT_NODE_SYMBOLS", "not valid JSON"),
         env={"BYBIT_NODE_SYMBOLS": '{"BTCUSDT": {intervals: [1}'}),
    Case("env-bad-value", ("gaps",), 2, ("$BYBIT_NODE_RISK__MAX_LEVERAGE (risk.max_leverage)", "the environment"),
         env={"BYBIT_NODE_RISK__MAX_LEVERAGE": "abc"}),
    Case("env-typo", ("gaps",), 2, ("$BYBIT_NODE_RISK__MAX_LEVRAGE", "unknown setting"),
         env={"BYBIT_NODE_RISK__MAX_LEVRAGE": "3"}),
    Case("env-bad-interval", ("gaps",), 2, ("$BYBIT_NODE_SYMBOLS", "(got '7')"),
         env={"BYBIT_NODE_SYMBOLS": '{"BTCUSDT": {"intervals": ["7"]}}'}, not_says=("Tuple should",)),
    Case("live-on-testnet", ("gaps",), 2, ("'live' is not allowed on venue 'testnet'",),
         config="venue: testnet\ntrading_mode: live\nlive_confirmed: true\n",
         env={"BYBIT_API_KEY": "k" * 18, "BYBIT_API_SECRET": "s" * 36}),
    Case("secret-in-file", ("gaps",), 2, ("secrets are never read from a file",), config="api_secret: hunter2\n"),
    Case("data-dir-is-a-file", ("run", "--duration", "1"), 2, ("data_dir", "is a file, not a directory"),
         setup=_data_dir_is_a_file),
    Case("data-dir-is-a-file-gaps", ("gaps",), 2, ("is a file, not a directory",), setup=_data_dir_is_a_file),
    # --- failures: exit 1, one paragraph, nothing clobbered -----------------------------------
    Case("corrupt-gaps", ("gaps",), 1, CORRUPT, setup=_corrupt_history, may_write=(*LOGS, *STORE_LOCK)),
    Case("corrupt-heal", ("heal",), 1, CORRUPT, setup=_corrupt_history, may_write=(*LOGS, *STORE_LOCK)),
    Case("corrupt-sync", ("sync", "--days", "1"), 1, CORRUPT, setup=_corrupt_history,
         may_write=(*LOGS, *STORE_LOCK)),
    Case("corrupt-run", ("run", "--duration", "30"), 1, (*CORRUPT, "did not start"), setup=_corrupt_history,
         may_write=(*LOGS, *STORE_LOCK, *NODE_LOCK)),
    Case("log-unwritable-run", ("run", "--duration", "1"), 1, ("cannot write the log file", "node.jsonl"),
         setup=_log_file_is_a_directory),
    Case("log-unwritable-heal", ("heal",), 1, ("cannot write the log file",), setup=_log_file_is_a_directory),
    Case("unlisted-symbol", ("run", "--duration", "30"), 1,
         ("FOOUSDT is not listed by the venue", "ETHHUSDT is not listed", "did you mean ETHUSDT", "did not start"),
         env={"BYBIT_NODE_SYMBOLS": '{"FOOUSDT": {"intervals": ["1"]}, "ETHHUSDT": {"intervals": ["1"]}}'},
         may_write=(*LOGS, *NODE_LOCK)),
    Case("unlisted-symbol-preflight", ("preflight", "--read-only"), 1,
         ("FOOUSDT is not listed by the venue", "REFUSED"),
         env={"BYBIT_NODE_SYMBOLS": '{"FOOUSDT": {"intervals": ["1"]}}'}),
    Case("lock-unopenable-gaps", ("gaps",), 1, ("failed: Is a directory", "sim.duckdb.lock"),
         setup=_lock_file_is_a_directory, may_write=LOGS),
    Case("lock-unopenable-run", ("run", "--duration", "30"), 1, ("failed: Is a directory",),
         setup=_lock_file_is_a_directory, may_write=(*LOGS, *NODE_LOCK)),
    # --- fine, and creating nothing it was not asked for --------------------------------------
    Case("gaps-no-data-dir", ("gaps",), 0, ("no history yet",)),
    Case("preflight-read-only-default", ("preflight", "--read-only"), 0,
         ("would lower leverage 10x -> 5x", "would arm disconnect-cancel-all at start, window 10 s", "PASSED"),
         not_says=("armed,",)),
]


def _env(root: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYBIT_")}
    env.update({"BYBIT_NODE_DATA_DIR": str(root / "data"), "BYBIT_NODE_LOG__CONSOLE": "plain",
                "NO_PROXY": "127.0.0.1,localhost"})
    env.update(extra)
    return env


def _files(root: Path) -> dict[str, tuple]:
    """Every path under root: (kind, size, mtime_ns, bytes) so any write, even a same-size one, shows."""
    out: dict[str, tuple] = {}
    for path in root.rglob("*"):
        rel = str(path.relative_to(root))
        if path.is_dir():
            out[rel] = ("dir",)  # what appears inside shows as its own entry
            continue
        st = path.lstat()
        out[rel] = ("file", st.st_size, st.st_mtime_ns, path.read_bytes() if st.st_size < 5_000_000 else None)
    return out


def run_main(root: Path, args: tuple[str, ...], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], cwd=root, env=_env(root, env),
                          capture_output=True, text=True, timeout=80, **kw)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_one_clear_answer(tmp_path, case: Case):
    root = tmp_path / "work"
    root.mkdir()
    args = case.args
    if case.config is not None:
        text = case.config if case.raw_config else f"data_dir: {root / 'data'}\n{case.config}"
        (root / "config.yaml").write_text(text)
    elif "--config" not in args:
        args = ("--config", str(REPO / "config.yaml"), *args)
    if case.setup is not None:
        case.setup(root)
    before = _files(root)

    done = run_main(root, args, case.env)

    out = done.stdout + done.stderr
    assert done.returncode == case.code, out
    assert "Traceback" not in out, out
    for phrase in case.says:
        assert phrase in out, f"{phrase!r} not in:\n{out}"
    for phrase in case.not_says:
        assert phrase not in out, f"{phrase!r} in:\n{out}"
    assert "\n\n" not in done.stderr.strip(), done.stderr  # one paragraph
    after = _files(root)
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    unexpected = [p for p in changed if not any(fnmatch(p, pattern) for pattern in case.may_write)]
    assert unexpected == [], f"wrote {unexpected}"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits; a read-only mount needs privileges")
@pytest.mark.parametrize("command", [("gaps",), ("heal",), ("run", "--duration", "1")])
def test_read_only_data_dir_is_one_clear_answer(tmp_path, command):
    data = tmp_path / "data"
    (data / "logs").mkdir(parents=True)
    for d in (data / "logs", data):
        d.chmod(0o555)
    try:
        done = run_main(tmp_path, ("--config", str(REPO / "config.yaml"), *command), {})
    finally:
        for d in (data, data / "logs"):
            d.chmod(0o755)
    out = done.stdout + done.stderr
    assert "Traceback" not in out
    assert done.returncode in (0, 1), out  # gaps on an empty read-only dir has nothing to show: 0


def test_gaps_fits_an_80_column_terminal(tmp_path):
    from datetime import datetime, timezone

    from infra.store import HistoryStore
    from infra.store.testing import make_series

    store = HistoryStore(tmp_path / "data" / "sim.duckdb")
    bars = make_series("BTCUSDT", "1", datetime(2024, 1, 1, tzinfo=timezone.utc), 50)
    store.write_bars(bars[:20] + bars[25:])
    store.close()
    done = run_main(tmp_path, ("--config", str(REPO / "config.yaml"), "gaps"), {"COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any("BTCUSDT" in line for line in lines) and "1 (5)" in done.stdout  # one gap of five bars
    too_wide = [line for line in lines if len(line) > 80]
    assert too_wide == []


@pytest.mark.timeout(120)
def test_ctrl_c_during_sync_exits_130_and_leaves_a_readable_file(tmp_path):
    env = _env(tmp_path, {})
    log = tmp_path / "data" / "logs" / "node.jsonl"
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "main.py"), "--config", str(REPO / "config.yaml"), "sync",
         "--symbol", "BTCUSDT", "--interval", "1", "--days", "400"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_until(lambda: any(e["event"] == "sync.progress" for e in read_events(log)), timeout=60,
                   what="the sync's first stored page")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in out + err and "interrupted" in err and "consistent" in err
    # The file is a readable history afterwards, with what was stored before the interrupt.
    again = run_main(tmp_path, ("--config", str(REPO / "config.yaml"), "gaps"), {})
    assert again.returncode == 0, again.stderr
    assert "BTCUSDT" in again.stdout


def test_the_standalone_simulator_refuses_an_unlisted_symbol(tmp_path):
    done = subprocess.run([sys.executable, "-m", "infra.sim", "--api-key", "k", "--api-secret", "s",
                           "--symbols", "BTCUSDT,ETHUSTD"], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "ETHUSTD is not listed by the simulator" in done.stderr and "did you mean ETHUSDT" in done.stderr
