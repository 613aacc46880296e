"""`python main.py signal` and `python main.py panic`: both ends.

Node side: `node_handler` turns a `signal` command into a `Signal` told to
the Executor, a `signal_result` command into a `GetExecution` asked of it
(what the signal became so far), and a `panic` command into a `Panic` asked
of the Panic actor (the reply carries its report). The signal is told, not
asked: the watcher takes one command at a time, and a `panic` must never
wait behind a signal's venue calls; the command side polls for the outcome.
Command side: with a node running on this data directory and venue, the
command goes through the control directory (`infra.control`); `panic` with
no node running, or with one that does not answer, does the same procedure
itself, straight through the gateway.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from decimal import Decimal
from typing import Any, Callable

import pykka
from pydantic import ValidationError

from actors.base import Directory, Role
from infra.cli_args import non_negative_seconds, positive_decimal
from infra.logging import get_logger, say
from messages.commands import Direction, Panic, PanicReport, Signal
from messages.trading import ExecutionOutcome, ExecutionResult, GetExecution

log = get_logger("control")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
SIGNAL_REPLY_TIMEOUT_S = 10.0
RESULT_ASK_S = 2.0
SIGNAL_POLL_S = 0.25
# What an operator can take as done; anything else final (blocked, rejected, unknown, ...) exits 1.
SIGNAL_DONE = {ExecutionOutcome.FILLED, ExecutionOutcome.CLOSED, ExecutionOutcome.ALREADY_FLAT}


def panic_timeout_s(node: Any) -> float:
    """How long a panic may take end to end, plus room for the reply."""
    return float(node.panic.deadline_s) + 15.0


def panic_pickup_s(node: Any) -> float:
    """How long a live node's watcher may take to claim a panic before the command panics itself:
    a few polls, plus the longest command it may be busy with (a signal_result ask)."""
    return 5 * node.panic.control_poll_ms / 1000 + RESULT_ASK_S + 1.0


# --- node side ------------------------------------------------------------------------------


def node_handler(directory: Directory, node: Any) -> Callable[[str, dict[str, Any]], dict[str, Any]]:
    def handle(command: str, args: dict[str, Any]) -> dict[str, Any]:
        if command == "signal":
            return _signal(directory, args)
        if command == "signal_result":
            return _signal_result(directory, args)
        if command == "panic":
            return _panic(directory, args, panic_timeout_s(node) - 5.0)
        return {"ok": False, "error": f"unknown command {command!r}"}

    return handle


def _signal(directory: Directory, args: dict[str, Any]) -> dict[str, Any]:
    try:
        signal = Signal(
            signal_id=str(args.get("signal_id") or f"cli-{uuid.uuid4().hex[:20]}"),
            symbol=args.get("symbol"),
            direction=args.get("direction"),
            usd=args.get("usd"),
            reason="operator: python main.py signal",
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'signal'}: {e['msg']}" for e in exc.errors())
        log.warning("control.signal_rejected", problems=problems)
        return {"ok": False, "error": f"invalid signal: {problems}"}
    delivered = directory.tell(Role.EXECUTOR, signal)
    log.info("control.signal", signal_id=signal.signal_id, symbol=signal.symbol, direction=signal.direction.value,
             usd=str(signal.usd) if signal.usd is not None else None, delivered=delivered)
    if not delivered:
        return {"ok": False, "error": "no Executor is running in the node", "signal_id": signal.signal_id}
    return {"ok": True, "signal_id": signal.signal_id, "delivered_to": Role.EXECUTOR.value}


def _signal_result(directory: Directory, args: dict[str, Any]) -> dict[str, Any]:
    signal_id = str(args.get("signal_id") or "")
    ref = directory.get(Role.EXECUTOR)
    if ref is None:
        return {"ok": False, "error": "no Executor is running in the node", "signal_id": signal_id}
    try:
        result = ref.ask(GetExecution(signal_id=signal_id), timeout=RESULT_ASK_S)
    except pykka.ActorDeadError:
        return {"ok": False, "error": "the Executor did not answer: ActorDeadError", "signal_id": signal_id}
    except pykka.Timeout:
        # Busy, not gone: it takes one message at a time, and a burst of signals (each asking
        # StateStore and Risk, up to risk.ask_timeout_s) can hold it past this short ask. Ask again later.
        return {"ok": True, "signal_id": signal_id, "busy": True}
    if not isinstance(result, ExecutionResult):
        return {"ok": True, "signal_id": signal_id, "seen": False}
    return {"ok": True, "signal_id": signal_id, "seen": True, "final": result.final, "result": result_fields(result)}


def result_fields(result: ExecutionResult) -> dict[str, Any]:
    """What the operator needs of an outcome, JSON-ready (Decimals as strings, None left out)."""
    fields = {
        "outcome": result.outcome.value, "reason": result.reason, "check": result.check, "symbol": result.symbol,
        "direction": result.direction, "side": result.side.value if result.side else None,
        "order_link_id": result.order_link_id, "order_id": result.order_id, "qty": result.qty,
        "filled_qty": result.filled_qty, "avg_price": result.avg_price, "price_source": result.price_source,
        "reduce_only": result.reduce_only, "take_profit": result.take_profit, "stop_loss": result.stop_loss,
    }
    return {k: str(v) if isinstance(v, Decimal) else v for k, v in fields.items() if v not in (None, "")}


def _panic(directory: Directory, args: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    ref = directory.get(Role.PANIC)
    if ref is None:
        return {"ok": False, "error": "no Panic actor is running in the node"}
    reason = str(args.get("reason") or "operator: python main.py panic")
    try:
        report = ref.ask(Panic(reason=reason), timeout=timeout_s)
    except (pykka.ActorDeadError, pykka.Timeout) as exc:
        log.error("control.panic_unanswered", error=repr(exc))
        return {"ok": False, "error": f"the Panic actor did not answer: {exc!r}"}
    if not isinstance(report, PanicReport):
        return {"ok": False, "error": f"unexpected answer {type(report).__name__}"}
    return {"ok": report.flat, "report": report.as_dict()}


# --- command side -----------------------------------------------------------------------------


def add_control_commands(sub: Any) -> None:
    sig = sub.add_parser(
        "signal",
        help="send a trading signal to the running node",
        description="Tell the running node's Executor a signal; it goes through the trading state, risk and "
                    "price checks like any other. Then wait for what it became and print it as JSON (outcome, "
                    "reason, order, fill). Needs a node running on this data_dir and venue.",
    )
    sig.add_argument("symbol", help="e.g. BTCUSDT")
    sig.add_argument("direction", choices=[d.value for d in Direction])
    sig.add_argument("--usd", type=positive_decimal, metavar="N", help="size in USDT notional (long/short; default: risk.default_order_usd)")
    sig.add_argument("--wait", type=non_negative_seconds, metavar="SECONDS", default=None,
                     help="how long to wait for the outcome (filled, closed, blocked, rejected, ...) and print it; "
                          "0: return once the node has the signal (default: risk.fill_timeout_s + 5). "
                          "Exit 0 only for filled, closed or already flat")
    sub.add_parser(
        "panic",
        help="halt trading, close every position (close before cancel), verify flat",
        description="With a node running: it halts, closes every position reduce-only before cancelling its "
                    "stops, cancels every other order and verifies flat over REST. With no node running the "
                    "same procedure runs here, through the gateway. Prints the report; exit 0 only when flat.",
    )


def signal_command(app: Any, args: Any) -> int:
    from infra.control import ControlError, send
    from infra.presence import running_pid

    node = app.node
    if args.direction == "flat" and args.usd is not None:
        say("error: a flat signal takes no --usd", file=sys.stderr)
        return EXIT_USAGE
    pid = running_pid(node.data_dir, node.venue.value)
    if pid is None:
        say(f"error: no node is running on {node.data_dir} for venue {node.venue.value}; "
            "a signal needs a running node (start one with `python main.py run`)", file=sys.stderr)
        return EXIT_FAILURE
    payload = {"symbol": args.symbol, "direction": args.direction,
               "usd": str(args.usd) if args.usd is not None else None}
    try:
        answer = send(node.data_dir, node.venue.value, "signal", payload, timeout_s=SIGNAL_REPLY_TIMEOUT_S)
    except ControlError as exc:
        say(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    wait_s = float(node.risk.fill_timeout_s) + 5.0 if args.wait is None else args.wait
    if answer.get("ok") and wait_s > 0:
        answer = _outcome(node, answer["signal_id"], wait_s)
    say(json.dumps(answer, indent=2))
    return EXIT_OK if answer.get("ok") else EXIT_FAILURE


def _outcome(node: Any, signal_id: str, wait_s: float) -> dict[str, Any]:
    """Poll the node for what the signal became until it is final or `wait_s` passed."""
    from infra.control import ControlError, send

    deadline = time.monotonic() + wait_s
    last: dict[str, Any] = {}
    while True:
        try:
            last = send(node.data_dir, node.venue.value, "signal_result", {"signal_id": signal_id},
                        timeout_s=SIGNAL_REPLY_TIMEOUT_S)
        except ControlError as exc:
            return {"ok": False, "signal_id": signal_id, "error": f"the node has the signal, but: {exc}"}
        if not last.get("ok"):
            return last
        if last.get("final"):
            result = last["result"]
            return {"ok": result["outcome"] in SIGNAL_DONE, "signal_id": signal_id, **result}
        if time.monotonic() >= deadline:
            break
        time.sleep(SIGNAL_POLL_S)
    if last.get("seen"):
        outcome, state = "pending", "pending (the order is on the venue, its fill not confirmed yet)"
    elif last.get("busy"):
        outcome, state = "pending", f"the Executor is still busy (no answer within {RESULT_ASK_S:g} s: a venue call)"
    else:
        outcome, state = "queued", "not taken up by the Executor yet"
    return {"ok": False, "signal_id": signal_id, "outcome": outcome,
            "error": f"no final outcome within {wait_s:g} s: {state}; follow signal_id {signal_id} in the log"}


def panic_command(app: Any, args: Any) -> int:
    from infra.control import ControlError, send
    from infra.presence import running_pid

    node = app.node
    pid = running_pid(node.data_dir, node.venue.value)
    why = "no node is running"
    if pid is not None:
        try:
            answer = send(node.data_dir, node.venue.value, "panic", {"reason": "operator: python main.py panic"},
                          timeout_s=panic_timeout_s(node), pickup_s=panic_pickup_s(node))
        except ControlError as exc:
            # The node is there but does not answer (hung, wedged, its control channel dead): the panic
            # button must still work. Reduce-only closes cannot over-close, so running beside a node
            # that is panicking itself after all is safe.
            say(f"error: {exc}; panicking straight through the gateway instead", file=sys.stderr)
            why = f"the running node (pid {pid}) did not answer: {exc}"
        else:
            say(json.dumps(answer.get("report", answer), indent=2))
            return EXIT_OK if answer.get("ok") else EXIT_FAILURE
    report = panic_without_node(app, why=why)
    if report is None:
        return EXIT_FAILURE
    say(json.dumps(report.as_dict(), indent=2))
    return EXIT_OK if report.flat else EXIT_FAILURE


def panic_without_node(app: Any, *, why: str = "no node is running") -> PanicReport | None:
    """The panic procedure straight through the gateway (no node runs to do it, or it does not answer)."""
    from contextlib import closing

    from actors.closing import ClosePolicy, Flattener
    from infra.bybit.errors import ExchangeError
    from infra.bybit.gateway import Gateway
    from infra.bybit.rate_limit import Lane
    from infra.venue import open_venue

    node = app.node
    cfg = node.panic
    log.warning("control.panic_direct", venue=node.venue.value, reason=f"{why}: panicking through the gateway")
    policy = ClosePolicy(attempts=cfg.close_attempts, deadline_s=float(cfg.close_deadline_s),
                         fill_timeout_s=float(cfg.fill_timeout_s))
    try:
        with open_venue(node) as urls, closing(Gateway.from_config(app, urls)) as gateway:
            problems = gateway.trading_problems()
            if problems:
                say(f"error: this venue/mode refuses account changes: {'; '.join(problems)}", file=sys.stderr)
                return None
            flattener = Flattener(gateway.on_lane(Lane.PANIC), list(node.symbols), policy,
                                  deadline_s=float(cfg.deadline_s), verify_rounds=cfg.verify_rounds)
            return flattener.run(f"operator: python main.py panic ({why})")
    except (ExchangeError, RuntimeError, OSError) as exc:
        say(f"error: cannot reach the venue: {exc}", file=sys.stderr)
        return None
