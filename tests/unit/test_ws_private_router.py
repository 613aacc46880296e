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


def test_one_bad_item_does_not_drop_the_good_fills_of_its_frame():
    """Private topics batch several items per frame, and their state is reseeded only on a
    reconnect: a fill refused with its bad neighbour is lost for as long as the socket stays up
    (a position the node does not know it has, PnL that never counted). Each item stands alone."""
    directory, store = Directory(), Peer()
    directory.register(Role.STATE_STORE, store)
    router = PrivateFrameRouter(directory, generation=3)
    frame = json.loads((SAMPLES / "4.12-private-execution-2.json").read_text())
    good = frame["data"][0]
    bad = {**good, "execId": "bad-1", "execQty": "not a number"}
    later = {**good, "execId": "good-2"}
    frame["data"] = [good, bad, later]
    router.on_execution(frame)
    fills = [m for m in store.told if isinstance(m, Execution)]
    assert [f.exec_id for f in fills] == [good["execId"], "good-2"]
    rejected = [m for m in store.told if type(m).__name__ == "FrameRejected"]
    assert len(rejected) == 1 and rejected[0].stream == "execution" and router.counts["rejected"] == 1


def test_a_good_order_update_is_kept_beside_a_bad_one():
    directory, store = Directory(), Peer()
    directory.register(Role.STATE_STORE, store)
    router = PrivateFrameRouter(directory, generation=3)
    frame = json.loads((SAMPLES / "4.11-private-order-2.json").read_text())
    good = frame["data"][0]
    frame["data"] = [{**good, "orderStatus": "NoSuchStatus", "orderId": "x-1"}, good]
    router.on_order(frame)
    assert [m.order_id for m in store.told if isinstance(m, Order)] == [good["orderId"]]
    assert router.counts["rejected"] == 1


def test_a_frame_without_a_data_list_is_still_refused_whole():
    directory, store = Directory(), Peer()
    directory.register(Role.STATE_STORE, store)
    router = PrivateFrameRouter(directory, generation=3)
    frame = json.loads((SAMPLES / "4.12-private-execution-2.json").read_text())
    frame["data"] = {"not": "a list"}
    router.on_execution(frame)
    assert [type(m).__name__ for m in store.told] == ["FrameRejected"] and router.counts["rejected"] == 1
