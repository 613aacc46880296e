"""Every log event the gateway and preflight emit is documented for the operator."""

from __future__ import annotations

import re

from tests.conftest import REPO


def test_every_gateway_event_is_in_operations_md():
    emitted = set()
    for path in (REPO / "infra" / "bybit").glob("*.py"):
        emitted |= set(re.findall(r'log\.(?:debug|info|warning|error)\(\s*"([a-z_]+\.[a-z_.]+)"', path.read_text()))
    assert len(emitted) > 20  # the pattern still finds them
    doc = (REPO / "docs" / "OPERATIONS.md").read_text()
    missing = sorted(e for e in emitted if f"`{e}`" not in doc)
    assert missing == []
