"""Turning venue payloads into messages, with errors an operator can read."""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class MalformedPayload(ValueError):
    """A venue payload that cannot become a message. `reasons` lists each bad field."""

    def __init__(self, what: str, reasons: list[str]):
        self.what = what
        self.reasons = reasons
        super().__init__(f"malformed {what}: " + "; ".join(reasons))


def _reasons(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err.get("loc", ())) or "<payload>"
        msg = str(err.get("msg", "invalid"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err.get("type") != "missing" and "input" in err and not isinstance(err["input"], (dict, list)):
            msg += f" (got {err['input']!r})"
        out.append(f"{field}: {msg}")
    return out


def build(model: type[M], what: str, payload: Mapping[str, Any], **extra: Any) -> M:
    """Validate `payload` (Bybit field names) plus `extra` into `model`.

    Keys the message does not know are dropped: the venue adds fields over
    time, and a new field must not stop the node. Missing or malformed known
    fields raise MalformedPayload naming each one.
    """
    if not isinstance(payload, Mapping):
        raise MalformedPayload(what, [f"<payload>: expected an object, got {type(payload).__name__}"])
    return build_known(model, lambda: what, payload, **extra)


def build_known(model: type[M], what: Callable[[], str], payload: Mapping[str, Any], **extra: Any) -> M:
    """`build` for a payload already known to be a mapping; `what` is only worked out on failure (hot path)."""
    return build_fast(model, what, payload, extra)


def build_fast(model: type[M], what: Callable[[], str], payload: Mapping[str, Any], extra: dict[str, Any]) -> M:
    """`build_known` with `extra` as a dict: one call layer, for payloads that come thousands a second."""
    known, validate = _hot(model)
    data = {k: v for k, v in payload.items() if k in known}
    data.update(extra)
    try:
        # What model_validate runs, without its per-call argument handling.
        return validate(data)
    except ValidationError as exc:
        raise MalformedPayload(what(), _reasons(exc)) from None


_HOT: dict[type, tuple[frozenset[str], Callable[[Any], Any]]] = {}


def _hot(model: type[BaseModel]) -> tuple[frozenset[str], Callable[[Any], Any]]:
    """The field names a payload may carry and the model's validator, looked up once per model."""
    hot = _HOT.get(model)
    if hot is None:
        hot = _HOT[model] = (_aliases(model), model.__pydantic_validator__.validate_python)
    return hot


@functools.cache
def _aliases(model: type[BaseModel]) -> frozenset[str]:
    names: set[str] = set()
    for name, field in model.model_fields.items():
        names.add(name)
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif alias is not None:
            names.update(c for c in getattr(alias, "choices", ()) if isinstance(c, str))
        if field.alias:
            names.add(field.alias)
    return frozenset(names)


def require(frame: Any, key: str, what: str) -> Any:
    if not isinstance(frame, Mapping):
        raise MalformedPayload(what, [f"<frame>: expected an object, got {type(frame).__name__}"])
    if key not in frame:
        raise MalformedPayload(what, [f"{key}: Field required"])
    return frame[key]
