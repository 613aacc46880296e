"""Order, position and execution records of the simulated account, and their wire shapes."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from infra.sim.instruments import Instrument
from infra.sim.wire import dec_str

OPEN_STATUSES = ("New", "PartiallyFilled", "Untriggered")
TAKER_FEE = Decimal("0.00055")
MAKER_FEE = Decimal("0.0002")
MM_RATE = Decimal("0.005")
MONEY = Decimal("0.00000001")


def money(x: Decimal) -> str:
    return dec_str(x.quantize(MONEY))


@dataclass(eq=False)
class Order:
    order_id: str
    link_id: str
    symbol: str
    side: str
    order_type: str
    qty: int  # steps
    price: int | None  # ticks (None: market)
    tif: str
    reduce_only: bool
    close_on_trigger: bool
    position_idx: int
    created: int
    seq: int
    status: str = "New"
    updated: int = 0
    cum_qty: int = 0
    cum_value: Decimal = Decimal(0)
    cum_fee: Decimal = Decimal(0)
    stop_order_type: str = ""
    trigger_price: int | None = None
    trigger_direction: int = 0
    trigger_by: str = ""
    take_profit: int | None = None
    stop_loss: int | None = None
    tp_trigger_by: str = ""
    sl_trigger_by: str = ""
    tpsl_mode: str = ""
    create_type: str = "CreateByUser"
    cancel_type: str = "UNKNOWN"
    reject_reason: str = "EC_NoError"
    last_price_on_created: int | None = None
    closed_pnl: Decimal = Decimal(0)
    zero_avg_reads: int = 0

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def is_conditional(self) -> bool:
        return self.status == "Untriggered"

    @property
    def leaves(self) -> int:
        return self.qty - self.cum_qty if self.status in ("New", "PartiallyFilled", "Untriggered") else 0

    def avg_price(self, inst: Instrument) -> str:
        if self.cum_qty == 0:
            return "0"
        avg = self.cum_value / inst.qty_dec(self.cum_qty)
        return dec_str(avg.quantize(Decimal(1).scaleb(-max(inst.price_scale, 2) - 2)))

    def wire(self, inst: Instrument, ws: bool, zero_avg: bool = False) -> dict:
        p = inst.price_str
        leaves = self.leaves
        price_dec = inst.price_dec(self.price) if self.price is not None else None
        item = {
            "orderId": self.order_id,
            "orderLinkId": self.link_id,
            "blockTradeId": "",
            "symbol": self.symbol,
            "price": p(self.price) if self.price is not None else "0",
            "qty": inst.qty_str(self.qty),
            "side": self.side,
            "isLeverage": "",
            "positionIdx": self.position_idx,
            "orderStatus": self.status,
            "createType": self.create_type,
            "cancelType": self.cancel_type,
            "rejectReason": self.reject_reason,
            "avgPrice": "0" if zero_avg else self.avg_price(inst),
            "leavesQty": inst.qty_str(leaves),
            "leavesValue": money(inst.qty_dec(leaves) * price_dec) if price_dec is not None else "0",
            "cumExecQty": inst.qty_str(self.cum_qty),
            "cumExecValue": money(self.cum_value),
            "cumExecFee": money(self.cum_fee),
            "timeInForce": self.tif,
            "orderType": self.order_type,
            "stopOrderType": self.stop_order_type,
            "orderIv": "",
            "marketUnit": "",
            "triggerPrice": p(self.trigger_price) if self.trigger_price is not None else p(0),
            "takeProfit": p(self.take_profit) if self.take_profit is not None else p(0),
            "stopLoss": p(self.stop_loss) if self.stop_loss is not None else p(0),
            "tpslMode": self.tpsl_mode,
            "ocoTriggerBy": "",
            "tpLimitPrice": "",
            "slLimitPrice": "",
            "tpTriggerBy": self.tp_trigger_by,
            "slTriggerBy": self.sl_trigger_by,
            "triggerDirection": self.trigger_direction,
            "triggerBy": self.trigger_by,
            "lastPriceOnCreated": p(self.last_price_on_created) if self.last_price_on_created is not None else "",
            "basePrice": p(self.last_price_on_created) if self.last_price_on_created is not None else "",
            "reduceOnly": self.reduce_only,
            "closeOnTrigger": self.close_on_trigger,
            "placeType": "",
            "smpType": "None",
            "smpGroup": 0,
            "smpOrderId": "",
            "createdTime": str(self.created),
            "updatedTime": str(self.updated or self.created),
            "cumFeeDetail": {"USDT": money(self.cum_fee)} if self.cum_fee else {},
            "parentOrderLinkId": "",
        }
        if ws:
            item.update(category="linear", closedPnl=money(self.closed_pnl), feeCurrency="",
                        slippageToleranceType="UNKNOWN", slippageTolerance="0", brokerOrderPrice="",
                        rpiTakerAccess=False, rpiMatchedQty="0")
        return item


@dataclass(eq=False)
class Position:
    symbol: str
    idx: int
    leverage: Decimal
    created: int
    size: int = 0  # steps, >= 0
    side: str = ""  # Buy, Sell or "" when flat
    entry_value: Decimal = Decimal(0)  # sum(qty * price) of the open size
    open_fee: Decimal = Decimal(0)  # fees paid opening the open size
    take_profit: int | None = None
    stop_loss: int | None = None
    tp_trigger_by: str = "LastPrice"
    sl_trigger_by: str = "LastPrice"
    cur_realised: Decimal = Decimal(0)
    cum_realised: Decimal = Decimal(0)
    updated: int = 0
    seq: int = 0
    leverage_set_at: int = 0

    def avg_entry(self, inst: Instrument) -> Decimal:
        if self.size == 0:
            return Decimal(0)
        return self.entry_value / inst.qty_dec(self.size)

    def upl(self, inst: Instrument, mark: Decimal) -> Decimal:
        if self.size == 0:
            return Decimal(0)
        value = inst.qty_dec(self.size) * mark
        return (value - self.entry_value) if self.side == "Buy" else (self.entry_value - value)

    def wire(self, inst: Instrument, mark_ticks: int, ws: bool) -> dict:
        p = inst.price_str
        mark = inst.price_dec(mark_ticks)
        size = inst.qty_dec(self.size)
        value = size * mark
        im = value / self.leverage if self.size else Decimal(0)
        mm = value * MM_RATE if self.size else Decimal(0)
        avg = self.avg_entry(inst)
        avg_str = dec_str(avg.quantize(Decimal("0.00000001"))) if self.size else "0"
        liq = ""
        if self.size:
            # Isolated-style estimate: the price where the position margin is gone.
            move = avg / self.leverage
            liq_price = avg - move if self.side == "Buy" else avg + move
            liq = p(max(1, inst.to_ticks(liq_price)))
        item = {
            "positionIdx": self.idx,
            "riskId": 1,
            "riskLimitValue": "2000000",
            "symbol": self.symbol,
            "side": self.side,
            "size": inst.qty_str(self.size),
            "positionValue": money(self.entry_value) if self.size else "0",
            "tradeMode": 0,
            "positionStatus": "Normal",
            "autoAddMargin": 0,
            "adlRankIndicator": 2 if self.size else 0,
            "leverage": dec_str(self.leverage),
            "breakEvenPrice": avg_str,
            "positionBalance": money(im),
            "markPrice": p(mark_ticks),
            "liqPrice": liq,
            "bustPrice": "",
            "positionMM": money(mm),
            "positionMMByMp": money(mm),
            "positionIM": money(im),
            "positionIMByMp": money(im),
            "tpslMode": "Full",
            "takeProfit": p(self.take_profit) if self.take_profit is not None else p(0),
            "stopLoss": p(self.stop_loss) if self.stop_loss is not None else p(0),
            "trailingStop": p(0),
            "unrealisedPnl": money(self.upl(inst, mark)),
            "curRealisedPnl": money(self.cur_realised),
            "cumRealisedPnl": money(self.cum_realised),
            "sessionAvgPrice": "",
            "seq": self.seq,
            "isReduceOnly": False,
            "mmrSysUpdatedTime": "",
            "mmrSysUpdateTime": "",  # the documentation's example spells it this way
            "leverageSysUpdatedTime": "",
            "createdTime": str(self.created),
            "updatedTime": str(self.updated or self.created),
        }
        if ws:
            item["entryPrice"] = avg_str
            item["category"] = "linear"
        else:
            item["avgPrice"] = avg_str
        return item


@dataclass
class Execution:
    data: dict  # REST shape
    ws_extra: dict = field(default_factory=dict)
    exec_time: int = 0

    def wire(self, ws: bool) -> dict:
        return {**self.data, **self.ws_extra} if ws else dict(self.data)
