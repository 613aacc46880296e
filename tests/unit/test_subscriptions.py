"""DesiredSubscriptions (pure) and the Supervisor holding it: changed first, then told to WsPublic."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from actors.base import Directory, NodeActor, Role
from actors.supervisor import ChildSpec, Supervisor
from infra.config import load_config
from messages.commands import Subscribe, Unsubscribe
from messages.control import Ping
from messages.subscriptions import DesiredSubscriptions, SymbolStreams
from tests.helpers import wait_until


@pytest.fixture
def app(write_config):
    return load_config(write_config(
        "symbols:\n  BTCUSDT:\n    intervals: ['1', '60']\n  ETHUSDT:\n    intervals: ['5']\n    tickers: false\n"
    ))


def test_built_from_config_per_symbol(app):
    desired = DesiredSubscriptions.from_config(app.node.symbols)
    assert desired.topics() == ("tickers.BTCUSDT", "kline.1.BTCUSDT", "kline.60.BTCUSDT", "kline.5.ETHUSDT")
    assert desired.kline_series() == (("BTCUSDT", "1"), ("BTCUSDT", "60"), ("ETHUSDT", "5"))


def test_subscribe_adds_to_one_symbol_only_and_returns_a_new_set(app):
    desired = DesiredSubscriptions.from_config(app.node.symbols)
    more = desired.subscribe(Subscribe(symbol="ETHUSDT", intervals=("15",), tickers=False))
    assert "kline.15.ETHUSDT" in more.topics() and "kline.15.BTCUSDT" not in more.topics()  # DATA-013
    assert "kline.15.ETHUSDT" not in desired.topics()  # the old set is unchanged
    new_symbol = more.subscribe(Subscribe(symbol="SOLUSDT", intervals=("1",)))
    assert new_symbol.topics()[-2:] == ("tickers.SOLUSDT", "kline.1.SOLUSDT")
    assert more.subscribe(Subscribe(symbol="ETHUSDT", intervals=("15",), tickers=False)) == more  # idempotent


def test_unsubscribe_removes_streams_and_a_symbol_left_with_nothing(app):
    desired = DesiredSubscriptions.from_config(app.node.symbols)
    fewer = desired.unsubscribe(Unsubscribe(symbol="BTCUSDT", intervals=("60",), tickers=False))
    assert fewer.topics() == ("tickers.BTCUSDT", "kline.1.BTCUSDT", "kline.5.ETHUSDT")
    gone = fewer.unsubscribe(Unsubscribe(symbol="ETHUSDT"))
    assert "ETHUSDT" not in gone.symbols and gone.topics() == ("tickers.BTCUSDT", "kline.1.BTCUSDT")
    assert gone.unsubscribe(Unsubscribe(symbol="NOSUCHUSDT")) == gone


def test_the_set_is_immutable(app):
    desired = DesiredSubscriptions.from_config(app.node.symbols)
    with pytest.raises(ValidationError):
        desired.symbols = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        desired.symbols["SOLUSDT"] = SymbolStreams(tickers=True)  # type: ignore[index]


class Recorder(NodeActor):
    role = Role.WS_PUBLIC

    def __init__(self, ctx, seen):
        self.seen = seen
        super().__init__(ctx)
        seen.append(ctx.subscriptions)

    def handlers(self):
        return {DesiredSubscriptions: self.seen.append}


def test_supervisor_changes_the_desired_set_first_then_tells_ws_public(app):
    seen: list[DesiredSubscriptions] = []
    directory = Directory()
    supervisor = Supervisor.start(app, directory, [ChildSpec(Role.WS_PUBLIC, lambda ctx: Recorder.start(ctx, seen))])
    try:
        supervisor.ask(Ping(), timeout=5)
        assert seen == [DesiredSubscriptions.from_config(app.node.symbols)]  # the start context carries it
        supervisor.tell(Subscribe(symbol="SOLUSDT", intervals=("1",)))
        supervisor.tell(Unsubscribe(symbol="ETHUSDT"))
        wait_until(lambda: len(seen) == 3, what="two new sets at WsPublic")
        assert seen[1].topics() == seen[0].topics() + ("tickers.SOLUSDT", "kline.1.SOLUSDT")
        assert "kline.5.ETHUSDT" not in seen[2].topics()
        assert supervisor.proxy().desired_subscriptions().get(timeout=5) == seen[2]
    finally:
        supervisor.stop(block=True, timeout=5)
