"""The one product family the node trades: USDT-settled linear perpetuals (Bybit category `linear`)."""

CATEGORY = "linear"
SETTLE_COIN = "USDT"
