"""The control channel: commands to a running node through files, never a listening socket.

    <data_dir>/run/<venue>.control/requests/<id>.json    written by the command (temp file, then rename)
    <data_dir>/run/<venue>.control/taken/<id>.json       claimed by the node (rename: exactly one owner)
    <data_dir>/run/<venue>.control/replies/<id>.json     the node's answer (temp file, then rename)

A rename within one directory tree is atomic, so neither side ever reads a
half-written file, and the claim decides who owns a request: a command
that times out withdraws its request, and if the withdraw fails the node
has already taken it (the reply says so, or the command says it may have
been carried out). Only a local user who can write the data directory can
send commands; the directory is created owner-only.

`send` is the client side; `ControlWatcher` the node side (a polling
thread that hands each command to a handler and writes its reply).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from infra.logging import get_logger
from infra.presence import run_dir

log = get_logger("control")

# Commands that only read, polled several times a second while a `signal` command waits.
QUIET_COMMANDS = frozenset({"signal_result"})

Handler = Callable[[str, dict[str, Any]], dict[str, Any]]


class ControlError(RuntimeError):
    """The command could not be delivered or answered."""


class ControlTimeout(ControlError):
    def __init__(self, message: str, *, taken: bool):
        self.taken = taken
        super().__init__(message)


def control_dir(data_dir: Path, venue: str) -> Path:
    return run_dir(Path(data_dir)) / f"{venue}.control"


def _dirs(base: Path) -> tuple[Path, Path, Path]:
    return base / "requests", base / "taken", base / "replies"


def _ensure(base: Path) -> None:
    for d in (base, *_dirs(base)):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)


def _write_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload), encoding="utf-8")
    os.replace(tmp, path)


def send(data_dir: Path, venue: str, command: str, args: dict[str, Any], *, timeout_s: float,
         poll_s: float = 0.05, pickup_s: float | None = None) -> dict[str, Any]:
    """Deliver one command and wait for the node's reply (a dict with at least `ok`).

    `pickup_s`: give up sooner when the node has not even taken the command by then (its
    watcher is dead or wedged), instead of waiting out `timeout_s`, which is sized for the
    command's own work (a panic's whole procedure)."""
    base = control_dir(data_dir, venue)
    _ensure(base)
    requests, _, replies = _dirs(base)
    cid = uuid.uuid4().hex
    request = requests / f"{cid}.json"
    reply = replies / f"{cid}.json"
    _write_atomic(request, {"id": cid, "command": command, "args": args, "deadline": time.time() + timeout_s})
    started = time.monotonic()
    deadline = started + timeout_s
    pickup_by = None if pickup_s is None else started + min(pickup_s, timeout_s)
    while time.monotonic() < deadline:
        if pickup_by is not None and time.monotonic() >= pickup_by:
            pickup_by = None  # taken in time: wait for the answer as long as the command may take
            if _withdrawn(request):
                raise ControlTimeout(f"the node did not pick up the {command} command within {pickup_s:g} s",
                                     taken=False)
        if reply.exists():
            try:
                answer = json.loads(reply.read_text(encoding="utf-8"))
            finally:
                reply.unlink(missing_ok=True)
            if not isinstance(answer, dict):
                raise ControlError("the node's reply is not a JSON object")
            return answer
        time.sleep(poll_s)
    if _withdrawn(request):
        raise ControlTimeout(f"the node did not pick up the {command} command within {timeout_s:g} s", taken=False)
    raise ControlTimeout(f"the node took the {command} command but did not answer within {timeout_s:g} s; "
                         "it may still be carrying it out (see its log)", taken=True)


def _withdrawn(request: Path) -> bool:
    """Take back a request the node has not claimed; False if it already has. The watcher claims
    by renaming the file, so exactly one of the two wins."""
    try:
        request.unlink()
    except FileNotFoundError:
        return False
    return True


class ControlWatcher:
    """Polls the request directory on its own thread; one command at a time, in arrival order."""

    def __init__(self, data_dir: Path, venue: str, handler: Handler, *, poll_s: float = 0.1):
        self._base = control_dir(data_dir, venue)
        self._handler = handler
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="control-watcher", daemon=True)

    def start(self) -> "ControlWatcher":
        _ensure(self._base)
        log.info("control.watching", path=str(self._base))
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        requests, _, _ = _dirs(self._base)
        while not self._stop.wait(self._poll_s):
            try:
                pending = sorted(requests.glob("*.json"), key=lambda p: p.stat().st_mtime)
            except FileNotFoundError:
                pending = []  # a request withdrawn between listing and stat
            except OSError as exc:
                log.error("control.unreadable", path=str(requests), error=str(exc))
                continue
            for path in pending:
                if self._stop.is_set():
                    return
                self._take(path)

    def _take(self, path: Path) -> None:
        _, taken_dir, replies = _dirs(self._base)
        taken = taken_dir / path.name
        try:
            os.replace(path, taken)  # the claim: after this the sender can no longer withdraw it
        except FileNotFoundError:
            return  # withdrawn by a sender that gave up
        cid = path.stem
        try:
            request = json.loads(taken.read_text(encoding="utf-8"))
            command, args, deadline = request["command"], request.get("args") or {}, float(request["deadline"])
            if not isinstance(command, str) or not isinstance(args, dict):
                raise ValueError("command must be a string and args an object")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("control.rejected", id=cid, error=f"{type(exc).__name__}: {exc}")
            answer: dict[str, Any] = {"ok": False, "error": f"malformed command file: {exc}"}
        else:
            if time.time() > deadline:
                log.warning("control.expired", id=cid, command=command)
                answer = {"ok": False, "error": "the command expired before the node read it"}
            else:
                # A read the command side polls with (what a signal became) is not an event.
                (log.debug if command in QUIET_COMMANDS else log.info)("control.command", id=cid, command=command,
                                                                       args=args)
                try:
                    answer = self._handler(command, args)
                except Exception as exc:  # noqa: BLE001 - a bad command must not end the watcher
                    log.error("control.failed", id=cid, command=command, error=repr(exc))
                    answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        try:
            _write_atomic(replies / f"{cid}.json", answer)
        finally:
            taken.unlink(missing_ok=True)
