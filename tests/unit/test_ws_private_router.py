"""PrivateFrameRouter: every private topic sample reaches the StateStore as its message."""

from __future__ import annotations

import json

import pytest

from actors.base import Directory, Role
from actors.ws_private import PrivateFrameRouter
from messages import Execution, Order, Position, Wallet
from tests.conftest import SAMPLES


class Peer:
    def __init__(self):
        self.told = []

    def tell(self, message):
        self.told.append(message)


@pytest.mark.parametrize(
    ("method", "sample", "kind"),
    [
        ("on_order", "4.11-private-order-2.json", Order),
        ("on_execution", "4.12-private-execution-2.json", Execution),
        ("on_position", "4.10-private-position-2.json", Position),
        ("on_wallet", "4.13-private-wallet-2.json", Wallet),
    ],
)
def test_private_topics_reach_the_state_store(method, sample, kind):
    directory, store = Directory(), Peer()
    directory.register(Role.STATE_STORE, store)
    router = PrivateFrameRouter(directory, generation=3)
    getattr(router, method)(json.loads((SAMPLES / sample).read_text()))
    assert [type(m) for m in store.told] == [kind]


def test_wrong_topic_is_rejected_not_raised():
    directory, store = Directory(), Peer()
    directory.register(Role.STATE_STORE, store)
    router = PrivateFrameRouter(directory, generation=3)
    router.on_order(json.loads((SAMPLES / "4.12-private-execution-2.json").read_text()))
    # Nothing of the frame reaches state: only the refusal, charged to the frame's stream.
    assert [(type(m).__name__, m.stream) for m in store.told] == [("FrameRejected", "execution")]
    assert router.counts["rejected"] == 1
