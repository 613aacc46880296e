"""The test helpers themselves: a log another process is still writing must read without error."""

from __future__ import annotations

from tests.helpers import read_events


def test_a_line_still_being_written_by_another_process_is_not_read_yet(tmp_path):
    """A node process writes its JSON log line by line; a test polling the file could catch the last
    line half written and failed on it (JSONDecodeError in test_node_process, seen in a full run)."""
    log = tmp_path / "node.jsonl"
    log.write_text('{"event": "node.starting"}\n{"event": "node.sta', encoding="utf-8")
    assert [e["event"] for e in read_events(log)] == ["node.starting"]
    log.write_text('{"event": "node.starting"}\n{"event": "node.started"}\n', encoding="utf-8")
    assert [e["event"] for e in read_events(log)] == ["node.starting", "node.started"]
