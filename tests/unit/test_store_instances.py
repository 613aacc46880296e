"""A closed store hands its in-memory DuckDB instance to the next store of the process:
nothing of the first file stays attached, and the next store writes only its own file."""

from __future__ import annotations

from datetime import datetime

import pytest

import infra.store.store as store_module
from infra.store import HistoryStore
from infra.store.testing import make_series
from messages.types import UTC

pytestmark = pytest.mark.timeout(30)

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _attached(conn) -> set[str]:
    return {r[0] for r in conn.execute("SELECT database_name FROM duckdb_databases() WHERE NOT internal").fetchall()}


def test_the_next_store_reuses_a_closed_stores_instance_with_nothing_attached(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "_idle", [])  # this test's pool only
    first = HistoryStore(tmp_path / "a.duckdb")
    first.write_bars(make_series("BTCUSDT", "1", T0, 10))
    instance = first._instance
    first.close()
    assert first._instance is None and [c for c, _ in store_module._idle] == [instance]
    assert _attached(instance) == {"memory"}  # the file is not open between sessions, pooled or not

    second = HistoryStore(tmp_path / "b.duckdb")
    second.write_bars(make_series("ETHUSDT", "1", T0, 3))
    assert second._instance is instance and store_module._idle == []
    with second.session() as s:
        assert s.count() == 3 and s.count("BTCUSDT") == 0
    second.close()
    with first.session() as s:
        assert s.count() == 10 and s.count("ETHUSDT") == 0


def test_the_pool_keeps_at_most_a_few_idle_instances(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "_idle", [])
    stores = [HistoryStore(tmp_path / f"{i}.duckdb") for i in range(store_module._IDLE_MAX + 2)]
    for s in stores:
        s.write_bars([])  # opens an instance each (the pool is empty while all are in use)
    assert len({id(s._instance) for s in stores}) == len(stores)
    for s in stores:
        s.close()
    assert len(store_module._idle) == store_module._IDLE_MAX
