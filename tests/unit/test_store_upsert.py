"""Writes: one columnar upsert per batch; duplicates cannot exist (DATA-005); exact decimals."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import duckdb
import pytest

from infra.store import HistoryStore
from infra.store.batch import fits
from infra.store.testing import make_bar, make_series, opens
from messages.market import BarSource
from messages.types import UTC, utc_to_ms

pytestmark = pytest.mark.timeout(30)

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def store(tmp_path):
    return HistoryStore(tmp_path / "sim.duckdb", lock_timeout_s=5)


def test_round_trip_is_exact(store):
    bars = make_series("BTCUSDT", "1", T0, 50)
    assert store.write_bars(bars).written == 50
    with store.session() as s:
        assert s.bars("BTCUSDT", "1") == bars


def test_writing_a_bar_twice_leaves_one_row_the_last_one(store):
    first = make_bar("BTCUSDT", "1", utc_to_ms(T0), seq=1, source=BarSource.WS)
    second = make_bar("BTCUSDT", "1", utc_to_ms(T0), seq=2, source=BarSource.REST)
    store.write_bars([first])
    store.write_bars([second])
    store.write_bars([second])
    with store.session() as s:
        assert s.count() == 1
        assert s.bars("BTCUSDT", "1") == [second]
        assert s.duplicate_keys() == 0


def test_one_batch_holding_the_same_bar_twice_stores_it_once(store):
    t = utc_to_ms(T0)
    older, newer = make_bar("BTCUSDT", "1", t, seq=1), make_bar("BTCUSDT", "1", t, seq=2)
    result = store.write_bars([older, newer])
    assert result.written == 1
    with store.session() as s:
        assert s.bars("BTCUSDT", "1") == [newer]


def test_a_batch_with_several_keys_repeated_keeps_each_ones_last_copy(store):
    t = utc_to_ms(T0)
    a1, a2, a3 = (make_bar("BTCUSDT", "1", t, seq=i) for i in (1, 2, 3))
    b1, b2 = (make_bar("BTCUSDT", "1", t + 60_000, seq=i) for i in (4, 5))
    c1 = make_bar("ETHUSDT", "1", t, seq=6)
    assert store.write_bars([a1, b1, a2, c1, a3, b2]).written == 3
    with store.session() as s:
        assert s.bars("BTCUSDT", "1") == [a3, b2] and s.bars("ETHUSDT", "1") == [c1]


def test_the_schema_itself_refuses_a_duplicate_key(store):
    """Heal's dedupe has nothing to do: even a raw INSERT bypassing the store cannot duplicate a bar."""
    store.write_bars([make_bar("BTCUSDT", "1", utc_to_ms(T0))])
    with store.session() as s:
        with pytest.raises(duckdb.ConstraintException):
            s.conn.execute("INSERT INTO ohlcv SELECT * FROM ohlcv")
        with pytest.raises(duckdb.ConstraintException):
            s.conn.execute(
                "INSERT INTO ohlcv VALUES ('BTCUSDT', '1', ?, 1, 1, 1, 1, 1, 1, 'rest')", [T0.replace(tzinfo=None)]
            )
        assert s.count() == 1
        assert s.duplicate_keys() == 0


def test_same_open_time_on_other_symbol_or_interval_is_another_bar(store):
    t = utc_to_ms(T0)
    store.write_bars([make_bar("BTCUSDT", "1", t), make_bar("ETHUSDT", "1", t), make_bar("BTCUSDT", "60", t)])
    with store.session() as s:
        assert s.count() == 3


def test_source_is_recorded(store):
    t = list(opens("1", T0, 2))
    store.write_bars([make_bar("BTCUSDT", "1", t[0], source=BarSource.WS), make_bar("BTCUSDT", "1", t[1])])
    with store.session() as s:
        assert [b.source for b in s.bars("BTCUSDT", "1")] == [BarSource.WS, BarSource.REST]


def test_series_metadata_tracks_first_and_last_bar(store):
    bars = make_series("BTCUSDT", "60", T0, 48)
    store.write_bars(bars[10:20])
    store.write_bars(bars[:5])
    store.write_bars(bars[30:])
    with store.session() as s:
        s.mark_synced("BTCUSDT", "60")
        (info,) = s.series()
    assert (info.symbol, info.interval) == ("BTCUSDT", "60")
    assert info.first_open == bars[0].open_time and info.last_open == bars[-1].open_time
    assert info.last_sync_at is not None and info.last_heal_at is None


def test_series_metadata_of_a_mixed_batch_known_new_and_synced_before_any_bar(store):
    btc = make_series("BTCUSDT", "1", T0, 30)
    eth = make_series("ETHUSDT", "5", T0, 30)
    sol = make_series("SOLUSDT", "1", T0, 30)
    store.write_bars(btc[10:20])
    with store.session() as s:
        s.mark_synced("SOLUSDT", "1")  # a series row with no bar yet
    store.write_bars([*btc[:5], *btc[25:], *eth[3:9], *sol[7:8]])  # known, new, and bar-less series at once
    with store.session() as s:
        got = {(i.symbol, i.interval): (i.first_open, i.last_open) for i in s.series()}
        synced = s.series_info("SOLUSDT", "1").last_sync_at
    assert got == {
        ("BTCUSDT", "1"): (btc[0].open_time, btc[-1].open_time),
        ("ETHUSDT", "5"): (eth[3].open_time, eth[8].open_time),
        ("SOLUSDT", "1"): (sol[7].open_time, sol[7].open_time),
    }
    assert synced is not None


def test_a_bar_that_does_not_fit_the_column_is_rejected_not_rounded(store):
    good = make_bar("BTCUSDT", "1", utc_to_ms(T0))
    bad = good.model_copy(update={"open_time": datetime(2024, 1, 1, 0, 1, tzinfo=UTC),
                                  "volume": Decimal("1.0000000000000000001")})
    result = store.write_bars([good, bad])
    assert result.written == 1 and result.rejected == (bad,)
    with store.session() as s:
        assert s.bars("BTCUSDT", "1") == [good]


def test_decimal_fit():
    assert fits(Decimal("0.000000000000000001"))
    assert fits(Decimal("1.50000000000000000000"))  # more digits than the scale, but all zeros
    assert not fits(Decimal("0.0000000000000000001"))
    assert fits(Decimal("9" * 20))
    assert not fits(Decimal("1" + "0" * 20))
    assert not fits(Decimal("NaN"))


def test_a_batch_expected_new_is_still_an_upsert_when_some_bar_is_stored_or_repeated(store):
    """The sync writes its units as `expect_new` (a plain insert first): a bar that got stored
    meanwhile, or a key twice in the batch, must still end as one row, the last copy."""
    from infra.store.batch import build_batch

    new = make_series("BTCUSDT", "1", T0, 10)
    with store.session() as s:
        assert s.write_batch(build_batch(new), expect_new=True).written == 10  # the plain insert
        assert s.bars("BTCUSDT", "1") == new
    replaced = make_bar("BTCUSDT", "1", utc_to_ms(T0), seq=77)  # stored already, other prices
    twice = [make_bar("BTCUSDT", "1", t, seq=5) for t in opens("1", T0, 12)][10:]  # two new bars
    last = make_bar("BTCUSDT", "1", twice[0].open_ms, seq=6)
    with store.session() as s:
        assert s.write_batch(build_batch([replaced, *twice, last]), expect_new=True).written == 3
        stored = s.bars("BTCUSDT", "1")
        assert s.duplicate_keys() == 0
    assert len(stored) == 12
    assert stored[0] == replaced and stored[10] == last and stored[11] == twice[1]
    assert stored[1:10] == new[1:10]
