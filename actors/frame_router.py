"""The shared half of the WebSocket callbacks: parse, tell, never raise into pybit.

pybit calls these on its own thread. An exception escaping a callback closes
pybit's socket for good (REFERENCE.md 5.2), so every failure is caught,
counted and logged. Once a router's generation is retired (its socket was
replaced, here or in the `Directory`), late frames are counted and dropped,
never mixed into state.

Every rejection is logged with its reasons (a line costs microseconds, and
an operator must be able to see each refused frame); `rejected` in the line
is the router's running count.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from actors.base import Directory, Role
from infra.logging import get_logger
from messages import MalformedPayload
from messages.control import FrameRejected

Frame = Mapping[str, Any]
Parsed = Iterable[tuple[Role, Any]]


class FrameRouter:
    def __init__(self, directory: Directory, role: Role, generation: int):
        self._directory = directory
        self._role = role
        self.generation = generation
        self.retired = False
        self.counts = {"frames": 0, "rejected": 0, "late": 0, "undelivered": 0, "errors": 0}
        # Where a frame with no topic is charged in the StateStore's health: the socket itself.
        self.socket_stream = "public" if role is Role.WS_PUBLIC else "private"
        self._log = get_logger(f"actors.{role.value}").bind(role=role.value, generation=generation)

    def route(self, frame: Frame, parse: Callable[[Frame], Parsed]) -> None:
        """Parse `frame` into (recipient, message) pairs and tell each; swallow every error."""
        self._routed(frame, parse, None)

    def route_one(self, frame: Frame, parse: Callable[[Frame], Any], recipient: Role) -> None:
        """`route` for a frame that is always exactly one message for `recipient` (a ticker):
        the same counts, rejections and error handling, without a generator and a list per frame."""
        self._routed(frame, parse, recipient)

    def _routed(self, frame: Frame, parse: Callable[[Frame], Any], recipient: Role | None) -> None:
        """The guard both share. `recipient` None: `parse` yields (recipient, message) pairs."""
        try:
            if self.retired:
                self.counts["late"] += 1
                return
            self.counts["frames"] += 1
            if recipient is not None:
                self.deliver(recipient, parse(frame))
                return
            # Parse the whole frame first: a bad item refuses the frame, never half of it.
            for to, message in list(parse(frame)):
                self.deliver(to, message)
        except MalformedPayload as exc:
            self.reject(exc.what, exc.reasons, stream=self.stream_of(frame))
        except Exception as exc:  # never raise into pybit: it would close the socket for good
            self.counts["errors"] += 1
            self._log.error("ws.callback_error", error=repr(exc))

    def is_late(self) -> bool:
        """This generation was replaced: retired here, or in the directory by the Supervisor
        (which asks the directory, not a possibly stuck old actor)."""
        return self.retired or self._directory.is_retired(self._role, self.generation)

    def deliver(self, recipient: Role, message: Any) -> None:
        """Tell `message` to the role's current actor; count and log it if none is running."""
        if not self._directory.tell(recipient, message):
            self.undeliverable(recipient, message)

    def undeliverable(self, recipient: Role, message: Any) -> None:
        self.counts["undelivered"] += 1
        self._log.error("ws.undeliverable", to=recipient.value, message_type=type(message).__name__)

    def stream_of(self, frame: Frame) -> str:
        """The health stream a refused frame is charged to: its topic, else the socket."""
        topic = frame.get("topic") if isinstance(frame, Mapping) else None
        return topic if isinstance(topic, str) and topic else self.socket_stream

    def reject(self, what: str, reasons: list[str], stream: str | None = None) -> None:
        """Count a frame that cannot become a message, log it with its reasons, and tell the
        StateStore, whose per-stream `rejected` is what health and `status` show."""
        n = self.counts["rejected"] = self.counts["rejected"] + 1
        self._log.warning("ws.frame_rejected", what=what, reasons=reasons, rejected=n)
        self.deliver(Role.STATE_STORE, FrameRejected(stream=stream or self.socket_stream,
                                                     reason=reasons[0][:200] if reasons else what))
