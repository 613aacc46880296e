"""The running node's status file, and `python main.py status` reading it.

The node's main thread calls `StatusPublisher.publish()` about every second:
it asks the StateStore (`GetHealth`, `GetSnapshot`), Panic
(`GetTradingState`) and the DbWriter (`GetWriterStats`) downward with short
timeouts and writes `<data_dir>/run/<venue>.status.json` atomically (a
temporary file renamed over the old one), so a reader never sees half a
file. A peer that does not answer (not running, busy past the timeout, or
not handling that query) shows as unknown (null), never as a made-up value.

`status` trusts the file only while the node that wrote it holds its
presence lock (`infra.presence.running_pid`): a file left by a dead node is
never shown as live.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

from infra.logging import get_logger
from infra.presence import run_dir, running_pid
from messages.queries import GetHealth, GetSnapshot, GetTradingState, GetWriterStats, HealthReport, StateSnapshot, WriterStats

log = get_logger("status")

INTERVAL_S = 1.0
# A file older than this, from a node that still runs, means its main loop is not publishing.
STALE_AFTER_S = 5.0

Lookup = Callable[[], Any]  # -> the peer's current ActorRef, or None


def status_path(data_dir: Path, venue: str) -> Path:
    return run_dir(Path(data_dir)) / f"{venue}.status.json"


def _num(v: Decimal | float | None) -> str | None:
    return None if v is None else str(v)


class StatusPublisher:
    def __init__(self, data_dir: Path, venue: str, *, state_store: Lookup, panic: Lookup, db_writer: Lookup,
                 ask_timeout_s: float = 0.5, pid: int | None = None):
        self._path = status_path(data_dir, venue)
        self._venue = venue
        self._peers = {"state_store": state_store, "panic": panic, "db_writer": db_writer}
        self._timeout = ask_timeout_s
        self._pid = pid if pid is not None else os.getpid()
        self._failing = False
        # (peer, query type, ref) that answered None: an actor that does not handle the query
        # yet. Not asked again until that peer is a new actor, so its log is not flooded.
        self._unanswered: set[tuple[str, str, int]] = set()

    # --- collecting --------------------------------------------------------------

    def _ask(self, peer: str, message: Any) -> Any:
        ref = self._peers[peer]()
        if ref is None:
            return None
        key = (peer, type(message).__name__, id(ref))
        if key in self._unanswered:
            return None
        try:
            answer = ref.ask(message, timeout=self._timeout)
        except Exception:  # noqa: BLE001 - dead, busy or refusing: unknown, never a guess
            return None
        if answer is None:
            self._unanswered.add(key)
        return answer

    def collect(self) -> dict[str, Any]:
        now = datetime.now(timezone.utc)
        health = self._ask("state_store", GetHealth())
        snap = self._ask("state_store", GetSnapshot())
        health = health if isinstance(health, HealthReport) else None
        snap = snap if isinstance(snap, StateSnapshot) else None
        writer = self._ask("db_writer", GetWriterStats())
        return {
            "venue": self._venue,
            "pid": self._pid,
            "written_at": now.isoformat(),
            "written_at_ms": int(now.timestamp() * 1000),
            "trading_state": _trading_state(self._ask("panic", GetTradingState())),
            "ready": health.ready if health else None,
            "not_ready_reasons": list(health.reasons) if health else None,
            "streams": _streams(health) if health else None,
            "positions": _positions(snap) if snap else None,
            "open_orders": _orders(snap) if snap else None,
            "wallet": _wallet(snap) if snap else None,
            "db_writer": _plain(asdict(writer)) if isinstance(writer, WriterStats) else None,
        }

    # --- writing -----------------------------------------------------------------

    def publish(self) -> bool:
        """Collect and write atomically; never raises (the node must not stop over its status file)."""
        try:
            body = json.dumps(self.collect(), indent=1, default=str)
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=self._path.name, suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(body)
                os.replace(tmp, self._path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except Exception as exc:  # noqa: BLE001
            if not self._failing:
                log.error("status.write_failed", path=str(self._path), error=repr(exc))
            self._failing = True
            return False
        self._failing = False
        return True

    def remove(self) -> None:
        self._path.unlink(missing_ok=True)


def _trading_state(answer: Any) -> str | None:
    state = getattr(answer, "state", answer)
    value = getattr(state, "value", None)
    return value if isinstance(value, str) else None


def _streams(h: HealthReport) -> dict[str, Any]:
    return {name: {"connected": s.connected, "age_s": None if s.age_s is None else round(s.age_s, 3),
                   "stale": s.stale, "frames": s.frames, "rejected": s.rejected, "watched": s.watched}
            for name, s in h.streams.items()}


def _positions(snap: StateSnapshot) -> list[dict[str, Any]]:
    out = []
    for pnl in snap.position_pnl().values():
        out.append({
            "symbol": pnl.symbol, "side": pnl.side, "size": _num(pnl.size), "entry_price": _num(pnl.entry_price),
            "mark_price": _num(pnl.mark_price), "leverage": _num(pnl.leverage),
            "unrealised_pnl_usdt": _num(pnl.unrealised_pnl_usdt),
            "pnl_pct_of_margin": _num(None if pnl.pct_of_margin is None else round(pnl.pct_of_margin, 4)),
            "pnl_pct_of_notional": _num(None if pnl.pct_of_notional is None else round(pnl.pct_of_notional, 4)),
        })
    return out


def _orders(snap: StateSnapshot) -> list[dict[str, Any]]:
    return [{"order_id": o.order_id, "order_link_id": o.order_link_id, "symbol": o.symbol, "side": str(o.side),
             "type": o.order_type, "status": str(o.order_status), "price": _num(o.price), "qty": _num(o.qty),
             "trigger_price": _num(o.trigger_price), "reduce_only": o.reduce_only}
            for o in snap.open_orders.values()]


def _wallet(snap: StateSnapshot) -> dict[str, Any] | None:
    w = snap.wallet
    if w is None:
        return None
    return {"total_equity_usd": _num(w.total_equity), "total_available_usd": _num(w.total_available_balance),
            "total_perp_upl_usd": _num(w.total_perp_upl), "as_of": w.ts.isoformat()}


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v)) for k, v in d.items()}


# --- reading (the `status` command) ---------------------------------------------------


class StatusUnavailable(Exception):
    """No live status to show; the message is the one sentence for the operator."""


def read_live_status(data_dir: Path, venue: str, now: float | None = None) -> dict[str, Any]:
    """The running node's status with `status_age_s`; StatusUnavailable when there is no live node or file."""
    pid = running_pid(data_dir, venue)
    if pid is None:
        raise StatusUnavailable(f"No node is running for venue {venue} with data directory {data_dir}.")
    path = status_path(data_dir, venue)
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise StatusUnavailable(f"A node is running (pid {pid}) but has not published its status yet; "
                                f"try again in a second.") from None
    if pid > 0 and status.get("pid") != pid:
        raise StatusUnavailable(f"A node is running (pid {pid}) but the status file is from another process "
                                f"(pid {status.get('pid')}); try again in a second.")
    now = time.time() if now is None else now
    status["status_age_s"] = round(now - status.get("written_at_ms", 0) / 1000, 3)
    return status


def _yn(v: Any) -> str:
    return "unknown" if v is None else ("yes" if v else "no")


def _age(v: Any) -> str:
    return "never" if v is None else f"{float(v):.1f}s"


def render(status: dict[str, Any]) -> str:
    """The short human table of `python main.py status`."""
    lines = [f"venue {status.get('venue')}   pid {status.get('pid')}   status written {status.get('status_age_s')}s ago"]
    if status.get("status_age_s", 0) > STALE_AFTER_S:
        lines.append(f"WARNING: the status is {status['status_age_s']}s old: the node is not updating it")
    lines.append(f"trading state   {status.get('trading_state') or 'unknown'}")
    ready = status.get("ready")
    reasons = status.get("not_ready_reasons") or []
    lines.append(f"ready           {_yn(ready)}" + (f"  ({'; '.join(reasons)})" if ready is False and reasons else ""))
    streams = status.get("streams")
    if streams is None:
        lines.append("streams         unknown")
    else:
        lines.append(f"{'stream':<22}{'connected':>10}{'age':>9}{'stale':>7}{'frames':>9}{'rejected':>9}")
        for name, s in streams.items():
            stale = ("yes" if s["stale"] else "no") if s.get("watched", True) else "-"
            lines.append(f"  {name:<20}{_yn(s['connected']):>10}{_age(s['age_s']):>9}{stale:>7}"
                         f"{s['frames']:>9}{s['rejected']:>9}")
    positions = status.get("positions")
    if positions is None:
        lines.append("positions       unknown")
    elif not positions:
        lines.append("positions       none")
    else:
        lines.append("positions")
        for p in positions:
            lines.append(
                f"  {p['symbol']:<10} {p['side'] or '':<4} size {p['size']}  entry {p['entry_price']}  "
                f"mark {p['mark_price'] or 'unknown'}  uPnL {p['unrealised_pnl_usdt'] or 'unknown'} USDT "
                f"({_pct(p['pnl_pct_of_margin'])} of margin, {_pct(p['pnl_pct_of_notional'])} of notional)")
    orders = status.get("open_orders")
    if orders is None:
        lines.append("open orders     unknown")
    elif not orders:
        lines.append("open orders     none")
    else:
        lines.append("open orders")
        for o in orders:
            price = o["price"] or (f"trigger {o['trigger_price']}" if o.get("trigger_price") else "market")
            lines.append(f"  {o['symbol']:<10} {o['side']:<4} {o['type']:<6} qty {o['qty']} @ {price}  {o['status']}"
                         + ("  reduce-only" if o.get("reduce_only") else "") + f"  {o.get('order_link_id') or o['order_id']}")
    wallet = status.get("wallet")
    lines.append("wallet equity   " + (f"{wallet['total_equity_usd']} USD (available {wallet['total_available_usd']})"
                                       if wallet else "unknown"))
    w = status.get("db_writer")
    if w is None:
        lines.append("db writer       unknown")
    else:
        lines.append(f"db writer       queue {w.get('pending_bars')} bars, mailbox {w.get('mailbox')}, "
                     f"last flush {w.get('last_flush_at') or 'never'} ({w.get('last_flush_bars')} bars)"
                     + (f", FAILING since {w['failing_since']}: {w.get('last_error')}" if w.get("failing_since") else ""))
    return "\n".join(lines)


def _pct(v: Any) -> str:
    if v is None:
        return "unknown"
    d = Decimal(str(v))
    return f"{d:+.2f}%"
