"""Every `jq` filter in OPERATIONS.md's "How to answer" runs on the log of a real node and answers.

The filters are read from the document itself, so the doc cannot drift from
what the log really holds. They run through the `jq` library (the same
language as the jq command, installed by `make`), on the JSON log of a node
process that traded through the example strategy and refused one signal.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys

import jq
import pytest

from tests.conftest import REPO
from tests.helpers import read_events, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def documented_filters() -> dict[str, str]:
    """Question -> the jq command line under it, from the "How to answer" section."""
    doc = (REPO / "docs" / "OPERATIONS.md").read_text(encoding="utf-8")
    section = doc[doc.index("## How to answer"):]
    section = section[: section.index("\n## ", 3)]
    found: dict[str, str] = {}
    for question, block in re.findall(r"\n([^\n`?]+\?)(?:(?!```).)*?```sh\n(jq [^\n]+)\n```", section, re.S):
        found[question.strip()] = block
    return found


def run_jq(command_line: str, log_text: str, **placeholders: str) -> list:
    for name, value in placeholders.items():
        command_line = command_line.replace(name, value)
    argv = shlex.split(command_line)
    assert argv[0] == "jq" and argv[-1] == "data/logs/node.jsonl", command_line
    args: dict[str, str] = {}
    slurp, program, i = False, None, 1
    while i < len(argv) - 1:
        a = argv[i]
        if a == "--arg":
            args[argv[i + 1]] = argv[i + 2]
            i += 3
            continue
        if a.startswith("-"):
            slurp = slurp or "s" in a[1:]
        else:
            program = a
        i += 1
    compiled = jq.compile(program, args=args)
    if slurp:
        return compiled.input_value([json.loads(line) for line in log_text.splitlines() if line.strip()]).all()
    return compiled.input_text(log_text).all()


def test_every_documented_question_is_answered_from_a_real_log(tmp_path):
    filters = documented_filters()
    assert len(filters) == 5, filters.keys()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYBIT_")}
    env.update({"BYBIT_NODE_DATA_DIR": str(tmp_path / "data"), "BYBIT_NODE_LOG__CONSOLE": "off",
                "BYBIT_NODE_LOG__METRICS_INTERVAL_S": "1", "NO_PROXY": "127.0.0.1,localhost"})
    log_path = tmp_path / "data" / "logs" / "node.jsonl"
    node = subprocess.Popen([sys.executable, str(REPO / "main.py"), "run", "--duration", "180"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        filled = wait_until(lambda: next((e for e in read_events(log_path) if e["event"] == "order.filled"), None),
                            timeout=150, interval=0.5, what="an example order filled")
        # A signal far above risk.max_position_usd: Risk must refuse it.
        sent = subprocess.run([sys.executable, str(REPO / "main.py"), "signal", "BTCUSDT", "long", "--usd", "50000"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        answer = json.loads(sent.stdout)
        assert sent.returncode == 1 and answer["outcome"] == "blocked", (answer, sent.stderr)
        blocked_id = answer["signal_id"]
        wait_until(lambda: any(e.get("signal_id") == blocked_id and e["event"].endswith(".blocked")
                               for e in read_events(log_path)), timeout=30, what="the big signal refused")
        wait_until(lambda: any(e["event"] == "node.metrics" and e.get("trading_state") for e in read_events(log_path)),
                   timeout=30, what="a node.metrics line")
    finally:
        node.send_signal(signal.SIGINT)
        node.communicate(timeout=60)
    assert node.returncode == 0
    text = log_path.read_text(encoding="utf-8")
    events = read_events(log_path)
    q = {key.split("?")[0].split()[-1]: line for key, line in filters.items()}  # by the question's last word

    health = run_jq(q["healthy"], text)
    assert len(health) == 1 and health[0]["trading_state"] in ("ACTIVE", "REDUCING", "HALTED")
    assert set(health[0]) == {"ts", "ready", "trading_state", "children_down", "restarts_in_window", "mailboxes"}

    placed = next(e for e in events if e["event"] == "order.placed" and e["signal_id"] == filled["signal_id"])
    window = run_jq(q["moments"], text, FROM_TS=placed["ts"], TO_TS=filled["ts"] + "~")
    assert [w["event"] for w in window][0] == "order.placed" and window[-1]["event"] == "order.filled"
    assert all(w["event"] not in ("node.metrics", "db.flush") for w in window)

    why_blocked = run_jq(q["blocked"], text, SIGNAL_ID=blocked_id)
    assert why_blocked and why_blocked[0]["check"] and why_blocked[0]["reason"]

    path = run_jq(q["placed"], text, SIGNAL_ID=filled["signal_id"])
    names = [p["event"] for p in path]
    assert names.index("risk.allowed") < names.index("order.placed") < names.index("order.filled")
    assert path[names.index("order.filled")]["avg_price"] == filled["avg_price"]

    which = run_jq(q["id"], text, ORDER_ID=placed["order_id"])
    assert which == [filled["signal_id"]]
