"""Where this process talks to: the configured venue's URLs, starting the simulator when needed."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from infra.bybit.clients import VenueUrls, simulator_urls, venue_urls
from infra.config import NodeConfig, Venue


@contextmanager
def open_venue(node: NodeConfig) -> Iterator[VenueUrls]:
    """The venue's URLs for the duration of the block.

    For venue `sim` a private simulator runs on 127.0.0.1 for the block
    (its history is a pure function of its seed, so every process sees the
    same past), unless `exchange.rest_url` points at one already running
    (e.g. `python -m infra.sim`). Real venues need nothing started.
    """
    if node.venue is not Venue.SIM:
        yield venue_urls(node.venue, node.exchange)
        return
    if node.exchange.rest_url:
        yield venue_urls(node.venue, node.exchange, sim=simulator_urls(node.exchange.rest_url))
        return
    from infra.sim import Simulator  # the simulator (aiohttp, numpy) loads only when used

    sim = Simulator.from_config(node)
    try:
        yield venue_urls(node.venue, node.exchange, sim=sim.start())
    finally:
        sim.stop()

