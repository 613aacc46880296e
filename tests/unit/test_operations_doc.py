"""Every log event the node can emit is documented for the operator in docs/OPERATIONS.md."""

from __future__ import annotations

import re

from tests.conftest import REPO

# A structlog call whose first argument is a literal dotted event name.
_EVENT = re.compile(r'\.(?:debug|info|warning|error|exception|critical)\(\s*"([a-z0-9_]+(?:\.[a-z0-9_]+)+)"')


def emitted_events() -> dict[str, str]:
    found: dict[str, str] = {}
    sources = [REPO / "main.py", *(REPO / "actors").rglob("*.py"), *(REPO / "infra").rglob("*.py")]
    for path in sources:
        for name in _EVENT.findall(path.read_text(encoding="utf-8")):
            found.setdefault(name, str(path.relative_to(REPO)))
    return found


def test_every_event_is_in_operations_md():
    events = emitted_events()
    assert len(events) > 60  # the pattern still finds them
    doc = (REPO / "docs" / "OPERATIONS.md").read_text(encoding="utf-8")
    missing = sorted(f"{name} ({where})" for name, where in events.items() if f"`{name}`" not in doc)
    assert missing == []
