"""A Bybit V5 venue on loopback: REST + public/private WebSockets, a seeded market,
a matching engine and fault switches, spoken in Bybit's wire format so that
unmodified pybit talks to it. See `Simulator`."""

from infra.sim.clock import ManualClock, WallClock
from infra.sim.simulator import Simulator

__all__ = ["ManualClock", "Simulator", "WallClock"]
