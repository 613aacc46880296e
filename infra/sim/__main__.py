"""Run the simulator in the foreground until Ctrl-C.

    python -m infra.sim --port 8080 --api-key K --api-secret S [--seed 7] [--symbols BTCUSDT,ETHUSDT]

Logs `sim.started` with its REST and WebSocket URLs. Fault switches are
reachable at POST http://127.0.0.1:PORT/sim/fault/<name> (JSON keyword
arguments), e.g. `curl -XPOST localhost:8080/sim/fault/drop_sockets -d '{}'`.
"""

from __future__ import annotations

import argparse
import signal
import threading
from decimal import Decimal

from infra.logging import configure_logging, get_logger


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.sim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--api-secret", required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--symbols", default="BTCUSDT,ETHUSDT", help="comma-separated USDT perpetuals")
    parser.add_argument("--no-dcp", action="store_true", help="the account has no disconnect-cancel-all")
    parser.add_argument("--balance", default="10000", help="starting USDT balance")
    args = parser.parse_args(argv)
    from infra.sim.instruments import LISTED, UnlistedSymbol  # noqa: PLC0415

    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    for symbol in symbols:
        if symbol not in LISTED:
            parser.error(str(UnlistedSymbol(symbol)))  # exit 2, one line, no traceback
    configure_logging(console="auto", secrets=[args.api_secret])
    from infra.sim import Simulator  # noqa: PLC0415 - after logging is configured

    sim = Simulator(
        symbols=symbols,
        seed=args.seed,
        api_key=args.api_key,
        api_secret=args.api_secret,
        dcp_available=not args.no_dcp,
        starting_balance_usdt=Decimal(args.balance),
        port=args.port,
    )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    sim.start()
    try:
        stop.wait()
    finally:
        sim.stop()
    get_logger("sim").info("sim.exit")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
