"""The simulated UNIFIED account: matching, positions, TP/SL, funding, DCP.

Market orders fill at once against the model's book (buy at the ask, sell at
the bid, one tick apart). Limit orders that cross fill at once as taker, the
rest wait and fill at their price as maker when the path reaches it.
Conditional orders (user stops, position take-profit / stop-loss) trigger
when the path crosses their trigger price; a gap made by `set_price` fills
triggered market orders at the gapped price, as a real gap would.

Every change is pushed on the private topics `order`, `execution`,
`position`, `wallet`, in that order.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Iterable

from infra.logging import get_logger
from infra.sim.market import MIN_MS
from infra.sim.orders import MAKER_FEE, MM_RATE, TAKER_FEE, Execution, Order, Position, money
from infra.sim.wire import (
    DUPLICATE_ORDER_LINK_ID,
    INSUFFICIENT_BALANCE,
    LEVERAGE_NOT_MODIFIED,
    NOT_MODIFIED,
    NOTIONAL_TOO_LOW,
    OPEN_ORDERS_EXIST,
    ORDER_NOT_EXISTS,
    PERMISSION_DENIED,
    POSITION_EXISTS,
    POSITION_MODE_NOT_MODIFIED,
    PRICE_OUT_OF_RANGE,
    REDUCE_ONLY_VIOLATION,
    SimError,
    dec_str,
    param_error,
)

if TYPE_CHECKING:
    from infra.sim.exchange import Exchange

log = get_logger("sim")

DEFAULT_LEVERAGE = Decimal("10")
RECENT_CLOSED = 500  # /v5/order/realtime keeps this many closed orders
WEEK_MS = 7 * 86_400_000
_LINK_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def _dec(p: dict, name: str, required: bool = False) -> Decimal | None:
    value = p.get(name)
    if value is None or value == "":
        if required:
            raise param_error(f"params error: {name} is required")
        return None
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise param_error(f"params error: {name} invalid") from None
    if not d.is_finite():
        raise param_error(f"params error: {name} invalid")
    return d


def _bool(p: dict, name: str) -> bool:
    value = p.get(name, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if value in (0, 1):
        return bool(value)
    raise param_error(f"params error: {name} must be a boolean")


class Account:
    def __init__(self, ex: "Exchange", dcp_available: bool, starting_balance: Decimal):
        self.ex = ex
        self.dcp_available = dcp_available
        self.balance = Decimal(starting_balance)
        self.cum_realised = Decimal(0)
        self.orders: dict[str, Order] = {}
        self.open_orders: dict[str, Order] = {}  # the subset the market has to watch
        self.by_link: dict[str, str] = {}
        self.closed_ids: list[str] = []  # in closing order, for openOnly=1
        self.positions: dict[tuple[str, int], Position] = {}
        self.hedge: dict[str, bool] = {s: False for s in ex.models}
        self.leverage: dict[str, Decimal] = {s: DEFAULT_LEVERAGE for s in ex.models}
        self.executions: list[Execution] = []
        self.closed_pnl: list[dict] = []
        self.dcp_window_s = 10
        self.dcp_conns: dict[Any, None] = {}
        self.dcp_armed = False
        self.dcp_gone_since: int | None = None
        self.withdraw_permission = False
        self._seq = 0

    # --- helpers -----------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def inst(self, symbol: str):
        return self.ex.models[symbol].inst

    def last(self, symbol: str, t: int) -> int:
        return self.ex.models[symbol].last_ticks(t)

    def mark(self, symbol: str, t: int) -> int:
        model = self.ex.models[symbol]
        return model.mark_ticks(t, model.last_ticks(t))

    def price_of(self, symbol: str, by: str, t: int) -> int:
        model = self.ex.models[symbol]
        last = model.last_ticks(t)
        if by == "MarkPrice":
            return model.mark_ticks(t, last)
        if by == "IndexPrice":
            return model.index_ticks(t, last)
        return last

    def position(self, symbol: str, idx: int, t: int) -> Position:
        key = (symbol, idx)
        pos = self.positions.get(key)
        if pos is None:
            pos = self.positions[key] = Position(symbol, idx, self.leverage[symbol], created=t, seq=self._next_seq())
        return pos

    def _position_keys(self, symbol: str) -> list[int]:
        return [1, 2] if self.hedge[symbol] else [0]

    def _find(self, p: dict) -> Order | None:
        oid, link = p.get("orderId"), p.get("orderLinkId")
        if not oid and not link:
            raise param_error("params error: OrderId or orderLinkId is required")
        if oid:
            return self.orders.get(str(oid))
        found = self.by_link.get(str(link))
        return self.orders.get(found) if found else None

    def _add(self, order: Order) -> None:
        self.orders[order.order_id] = order
        self.open_orders[order.order_id] = order

    def _close_order(self, order: Order, status: str, t: int, cancel_type: str | None = None) -> None:
        self.open_orders.pop(order.order_id, None)
        order.status = status
        order.updated = t
        if cancel_type:
            order.cancel_type = cancel_type
        self.closed_ids.append(order.order_id)

    def _push_orders(self, orders: Iterable[Order], t: int) -> None:
        items = [o.wire(self.inst(o.symbol), ws=True) for o in orders]
        if items:
            self.ex.push_private("order", items, t)

    def _push_positions(self, keys: Iterable[tuple[str, int]], t: int) -> None:
        items = []
        for key in dict.fromkeys(keys):
            pos = self.positions.get(key)
            if pos is None:
                pos = self.position(*key, t)
            items.append(pos.wire(self.inst(pos.symbol), self.mark(pos.symbol, t), ws=True))
        if items:
            self.ex.push_private("position", items, t)

    def _push_wallet(self, t: int) -> None:
        self.ex.push_private("wallet", [self.wallet_item(t)], t)

    # --- wallet ------------------------------------------------------------------------------

    def _margins(self, t: int) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        """(unrealised PnL, position IM, order IM, maintenance margin)."""
        upl = pim = mm = oim = Decimal(0)
        for pos in self.positions.values():
            if pos.size:
                inst = self.inst(pos.symbol)
                mark = inst.price_dec(self.mark(pos.symbol, t))
                upl += pos.upl(inst, mark)
                value = inst.qty_dec(pos.size) * mark
                pim += value / pos.leverage
                mm += value * MM_RATE
        for order in self.open_orders.values():
            if order.status in ("New", "PartiallyFilled") and not order.reduce_only and order.price is not None:
                inst = self.inst(order.symbol)
                oim += inst.qty_dec(order.leaves) * inst.price_dec(order.price) / self.leverage[order.symbol]
        return upl, pim, oim, mm

    def available(self, t: int) -> Decimal:
        upl, pim, oim, _ = self._margins(t)
        return self.balance + upl - pim - oim

    def wallet_item(self, t: int) -> dict:
        upl, pim, oim, mm = self._margins(t)
        equity = self.balance + upl
        im = pim + oim
        avail = max(Decimal(0), equity - im)
        rate = (lambda x: dec_str((x / equity).quantize(Decimal("0.0001"))) if equity > 0 else "0")
        coin = {
            "coin": "USDT", "equity": money(equity), "usdValue": money(equity), "walletBalance": money(self.balance),
            "free": "", "locked": "0", "spotHedgingQty": "0", "borrowAmount": "0", "availableToWithdraw": "",
            "availableToBorrow": "", "accruedInterest": "0", "totalOrderIM": money(oim), "totalPositionIM": money(pim),
            "totalPositionMM": money(mm), "unrealisedPnl": money(upl), "cumRealisedPnl": money(self.cum_realised),
            "bonus": "0", "marginCollateral": True, "collateralSwitch": True, "spotBorrow": "0",
        }
        return {
            "accountType": "UNIFIED", "accountIMRate": rate(im), "accountIMRateByMp": rate(im),
            "accountMMRate": rate(mm), "accountMMRateByMp": rate(mm), "totalEquity": money(equity),
            "totalWalletBalance": money(self.balance), "totalMarginBalance": money(equity),
            "totalAvailableBalance": money(avail), "totalPerpUPL": money(upl), "totalInitialMargin": money(im),
            "totalInitialMarginByMp": money(im), "totalMaintenanceMargin": money(mm),
            "totalMaintenanceMarginByMp": money(mm), "accountLTV": "0", "coin": [coin],
        }

    # --- order entry --------------------------------------------------------------------------

    def create_order(self, p: dict, t: int) -> dict:
        faults = self.ex.faults.state
        symbol = self._symbol(p)
        inst = self.inst(symbol)
        side = p.get("side")
        if side not in ("Buy", "Sell"):
            raise param_error("params error: side invalid")
        order_type = p.get("orderType")
        if order_type not in ("Market", "Limit"):
            raise param_error("params error: orderType invalid")
        qty = _dec(p, "qty", required=True)
        assert qty is not None
        link = str(p.get("orderLinkId") or "")
        if len(link) > 36 or not set(link) <= _LINK_ID_CHARS:
            raise param_error("params error: orderLinkId invalid")
        if link and link in self.by_link:
            raise SimError(DUPLICATE_ORDER_LINK_ID, "OrderLinkedID is duplicate")
        if faults.fail_creates.take():
            code, msg = faults.fail_creates.value
            raise SimError(code, msg)
        reduce_only = _bool(p, "reduceOnly")
        close_on_trigger = _bool(p, "closeOnTrigger")
        idx = self._position_idx(symbol, p)
        steps = self._steps(inst, qty)
        max_qty = inst.max_mkt_qty if order_type == "Market" else inst.max_qty
        if steps > inst.to_steps(max_qty):
            raise param_error("The number of contracts exceeds maximum limit allowed")
        last = self.last(symbol, t)
        price = None
        tif = str(p.get("timeInForce") or "GTC")
        if order_type == "Limit":
            price_d = _dec(p, "price", required=True)
            assert price_d is not None
            price = self._ticks(inst, price_d, "price")
            if not last * 0.9 <= price <= last * 1.1:
                raise SimError(PRICE_OUT_OF_RANGE, "Order price is out of permissible range")
            if tif not in ("GTC", "IOC", "FOK", "PostOnly"):
                raise param_error("params error: timeInForce invalid")
        else:
            tif = "IOC"
        ref_price = price if price is not None else last + (1 if side == "Buy" else 0)
        if not reduce_only and inst.qty_dec(steps) * inst.price_dec(ref_price) < inst.min_notional:
            raise SimError(NOTIONAL_TOO_LOW, f"The order value must be at least {inst.min_notional} USDT")
        tp = self._opt_ticks(inst, p, "takeProfit")
        sl = self._opt_ticks(inst, p, "stopLoss")
        if reduce_only and (tp or sl):
            raise param_error("TP/SL cannot be set on a reduce-only order")
        trigger = self._opt_ticks(inst, p, "triggerPrice")
        order = Order(
            order_id=self.ex.ids.uuid("order"), link_id=link, symbol=symbol, side=side, order_type=order_type,
            qty=steps, price=price, tif=tif, reduce_only=reduce_only, close_on_trigger=close_on_trigger,
            position_idx=idx, created=t, seq=self._next_seq(), updated=t, take_profit=tp, stop_loss=sl,
            last_price_on_created=last,
        )
        if tp or sl:
            order.tpsl_mode = "Full"
            order.tp_trigger_by = str(p.get("tpTriggerBy") or "LastPrice") if tp else ""
            order.sl_trigger_by = str(p.get("slTriggerBy") or "LastPrice") if sl else ""
            basis = price if price is not None else last
            self._check_tpsl(side, basis, tp, sl)
        if trigger:
            direction = int(p.get("triggerDirection") or 0)
            by = str(p.get("triggerBy") or "LastPrice")
            current = self.price_of(symbol, by, t)
            if direction not in (1, 2):
                raise param_error("params error: triggerDirection is required for a conditional order")
            if direction == 1 and trigger <= current or direction == 2 and trigger >= current:
                raise param_error(
                    f"expect {'Rising' if direction == 1 else 'Falling'}, but trigger_price[{inst.price_str(trigger)}] "
                    f"{'<=' if direction == 1 else '>='} current[{inst.price_str(current)}]"
                )
            order.trigger_price, order.trigger_direction, order.trigger_by = trigger, direction, by
            order.stop_order_type, order.status = "Stop", "Untriggered"
        self._check_reduce_only(order, t)
        if not reduce_only and not trigger:
            need = inst.qty_dec(steps) * inst.price_dec(ref_price) * (1 / self.leverage[symbol] + TAKER_FEE)
            if need > self.available(t):
                raise SimError(INSUFFICIENT_BALANCE, "ab not enough for new order")
        if order_type == "Market" and faults.zero_avg_price_next_market:
            order.zero_avg_reads = faults.zero_avg_price_next_market
            faults.zero_avg_price_next_market = 0
        self._add(order)
        if link:
            self.by_link[link] = order.order_id
        log.debug("sim.order.created", order_id=order.order_id, symbol=symbol, side=side, type=order_type)
        self._activate(order, t)
        return {"orderId": order.order_id, "orderLinkId": order.link_id}

    def _symbol(self, p: dict) -> str:
        cat = p.get("category")
        if cat != "linear":
            raise param_error("params error: category invalid" if cat else "params error: category is required")
        symbol = p.get("symbol")
        if not symbol:
            raise param_error("params error: symbol is required")
        if symbol not in self.ex.models:
            raise param_error("params error: symbol invalid")
        return str(symbol)

    def _position_idx(self, symbol: str, p: dict) -> int:
        raw = p.get("positionIdx", 0)
        try:
            idx = int(raw)
        except (TypeError, ValueError):
            raise param_error("params error: positionIdx invalid") from None
        if idx not in self._position_keys(symbol):
            raise param_error("position idx not match position mode")
        return idx

    @staticmethod
    def _steps(inst, qty: Decimal) -> int:
        steps = qty / inst.qty_step
        if steps != steps.to_integral_value() or qty <= 0:
            raise param_error("Qty invalid: not a multiple of the qty step" if qty > 0 else "params error: qty invalid")
        if qty < inst.min_qty:
            raise param_error("The number of contracts exceeds minimum limit allowed")
        return int(steps)

    @staticmethod
    def _ticks(inst, price: Decimal, name: str) -> int:
        ticks = price / inst.tick
        if price <= 0 or ticks != ticks.to_integral_value():
            raise param_error(f"params error: {name} invalid (tick size {inst.tick})")
        return int(ticks)

    def _opt_ticks(self, inst, p: dict, name: str) -> int | None:
        value = _dec(p, name)
        if value is None or value == 0:
            return None
        return self._ticks(inst, value, name)

    @staticmethod
    def _check_tpsl(side: str, basis: int, tp: int | None, sl: int | None) -> None:
        long = side == "Buy"
        if tp is not None and (tp <= basis if long else tp >= basis):
            raise param_error(f"TakeProfit set for {'Buy' if long else 'Sell'} position should be "
                              f"{'higher' if long else 'lower'} than base_price")
        if sl is not None and (sl >= basis if long else sl <= basis):
            raise param_error(f"StopLoss set for {'Buy' if long else 'Sell'} position should be "
                              f"{'lower' if long else 'higher'} than base_price")

    def _position_for(self, order: Order, t: int) -> Position:
        return self.position(order.symbol, order.position_idx, t)

    def _check_reduce_only(self, order: Order, t: int) -> None:
        pos = self._position_for(order, t)
        if self.hedge[order.symbol]:
            opens = (order.position_idx == 1) == (order.side == "Buy")
            if not opens and not order.reduce_only:
                raise param_error("position idx not match position mode")
        if not order.reduce_only:
            return
        if pos.size == 0:
            raise SimError(REDUCE_ONLY_VIOLATION, "current position is zero, cannot fix reduce-only order qty")
        if pos.side == order.side:
            raise SimError(REDUCE_ONLY_VIOLATION, "reduce-only order has same side with current position")

    def _activate(self, order: Order, t: int) -> None:
        """A new (or just triggered) order meets the book."""
        if order.status == "Untriggered":
            self._push_orders([order], t)
            self._push_positions([(order.symbol, order.position_idx)], t)
            return
        symbol = order.symbol
        last = self.last(symbol, t)
        if order.order_type == "Market":
            self._fill(order, last + 1 if order.side == "Buy" else last, is_maker=False, t=t)
            return
        assert order.price is not None
        crosses = order.price >= last + 1 if order.side == "Buy" else order.price <= last
        if crosses:
            if order.tif == "PostOnly":
                order.reject_reason = "EC_PostOnlyWillTakeLiquidity"
                self._close_order(order, "Cancelled", t, "CancelByUser")
                self._push_orders([order], t)
                return
            self._fill(order, last + 1 if order.side == "Buy" else last, is_maker=False, t=t)
            return
        if order.tif in ("IOC", "FOK"):
            order.reject_reason = "EC_NoImmediateQtyToFill"
            self._close_order(order, "Cancelled", t, "CancelByUser")
            self._push_orders([order], t)
            return
        self._push_orders([order], t)
        self._push_positions([(symbol, order.position_idx)], t)
        self._push_wallet(t)

    # --- fills ---------------------------------------------------------------------------------

    def _fill(self, order: Order, price: int, is_maker: bool, t: int) -> None:
        inst = self.inst(order.symbol)
        pos = self._position_for(order, t)
        qty = order.qty - order.cum_qty
        if order.reduce_only or order.close_on_trigger:
            if pos.size == 0 or pos.side == order.side:
                order.reject_reason = "EC_ReduceOnlyRule"
                self._close_order(order, "Cancelled", t, "CancelByReduceOnly")
                self._push_orders([order], t)
                return
            qty = min(qty, pos.size)
        price_d = inst.price_dec(price)
        qty_d = inst.qty_dec(qty)
        value = qty_d * price_d
        rate = MAKER_FEE if is_maker else TAKER_FEE
        fee = value * rate
        pnl, closed, open_fee_share, entry_avg = self._apply_to_position(pos, order.side, qty, value, fee, inst)
        self.balance += pnl - fee
        self.cum_realised += pnl - fee
        pos.cur_realised += pnl - fee
        pos.cum_realised += pnl - fee
        pos.updated = t
        pos.seq = self._next_seq()
        order.cum_qty += qty
        order.cum_value += value
        order.cum_fee += fee
        order.updated = t
        done = order.cum_qty >= order.qty or order.order_type == "Market" or order.reduce_only or order.close_on_trigger
        if closed:
            net = pnl - fee - open_fee_share
            order.closed_pnl += net
            self.closed_pnl.append(self._closed_pnl_row(order, inst, closed, entry_avg, price_d, net, open_fee_share,
                                                        fee, pos.leverage, t))
        if done:
            self._close_order(order, "Filled", t)
        else:
            order.status = "PartiallyFilled"
        execution = self._execution(order, inst, qty, price, value, fee, rate, is_maker, closed, pnl, t)
        self.executions.append(execution)
        touched = [order]
        if pos.size == 0:
            touched += self._clear_position_orders(pos, t)
        elif order.take_profit or order.stop_loss:
            if not closed:
                touched += self._set_position_tpsl(pos, order.take_profit, order.stop_loss, order.tp_trigger_by,
                                                   order.sl_trigger_by, t)
        touched += self._resize_tpsl(pos, t)
        self.ex.push_private("execution", [execution.wire(ws=True)], t)
        self._push_orders(dict.fromkeys(touched), t)
        self._push_positions([(pos.symbol, pos.idx)], t)
        self._push_wallet(t)
        log.debug("sim.order.filled", order_id=order.order_id, qty=str(qty_d), price=str(price_d))

    @staticmethod
    def _apply_to_position(pos: Position, side: str, qty: int, value: Decimal, fee: Decimal, inst) -> tuple:
        """Update size/entry; return (gross pnl, closed steps, open-fee share, entry avg of the closed part)."""
        if pos.size == 0 or pos.side == side:
            pos.side = side
            pos.size += qty
            pos.entry_value += value
            pos.open_fee += fee
            return Decimal(0), 0, Decimal(0), Decimal(0)
        closed = min(qty, pos.size)
        entry_avg = pos.entry_value / inst.qty_dec(pos.size)
        exit_avg = value / inst.qty_dec(qty)
        closed_d = inst.qty_dec(closed)
        gross = (exit_avg - entry_avg) * closed_d if pos.side == "Buy" else (entry_avg - exit_avg) * closed_d
        share = pos.open_fee * closed / pos.size
        pos.entry_value -= entry_avg * closed_d
        pos.open_fee -= share
        pos.size -= closed
        if pos.size == 0:
            pos.side = ""
            pos.entry_value = Decimal(0)
            pos.open_fee = Decimal(0)
            rest = qty - closed
            if rest:
                pos.side = side
                pos.size = rest
                pos.entry_value = exit_avg * inst.qty_dec(rest)
                pos.open_fee = fee * rest / qty
        return gross, closed, share, entry_avg

    def _execution(self, order: Order, inst, qty: int, price: int, value: Decimal, fee: Decimal, rate: Decimal,
                   is_maker: bool, closed: int, pnl: Decimal, t: int) -> Execution:
        mark = self.mark(order.symbol, t)
        model = self.ex.models[order.symbol]
        data = {
            "symbol": order.symbol, "orderType": order.order_type, "underlyingPrice": "",
            "orderLinkId": order.link_id, "side": order.side, "indexPrice": inst.price_str(model.index_ticks(t, model.last_ticks(t))),
            "orderId": order.order_id, "stopOrderType": order.stop_order_type or "UNKNOWN",
            "leavesQty": inst.qty_str(order.qty - order.cum_qty if order.status == "PartiallyFilled" else 0),
            "execTime": str(t), "feeCurrency": "USDT", "isMaker": is_maker, "execFee": money(fee),
            "feeRate": dec_str(rate), "execId": self.ex.ids.uuid("exec"), "tradeIv": "", "blockTradeId": "",
            "markPrice": inst.price_str(mark), "execPrice": inst.price_str(price), "markIv": "",
            "orderQty": inst.qty_str(order.qty), "orderPrice": inst.price_str(order.price) if order.price else inst.price_str(price),
            "execValue": money(value), "execType": "Trade", "execQty": inst.qty_str(qty),
            "closedSize": inst.qty_str(closed), "extraFees": "", "seq": self._next_seq(),
            "createType": order.create_type,
        }
        # The WS topic carries extraFees as a list (REST: a string).
        extra = {"category": "linear", "isLeverage": "", "marketUnit": "", "execPnl": money(pnl), "extraFees": []}
        return Execution(data, extra, t)

    def _closed_pnl_row(self, order: Order, inst, closed: int, entry_avg: Decimal, exit_price: Decimal, net: Decimal,
                        open_fee: Decimal, close_fee: Decimal, leverage: Decimal, t: int) -> dict:
        closed_d = inst.qty_dec(closed)
        return {
            "symbol": order.symbol, "orderType": order.order_type, "leverage": dec_str(leverage),
            "updatedTime": str(t), "side": order.side, "orderId": order.order_id, "closedPnl": money(net),
            "avgEntryPrice": money(entry_avg), "qty": inst.qty_str(order.qty),
            "cumEntryValue": money(entry_avg * closed_d), "createdTime": str(order.created),
            "orderPrice": inst.price_str(order.price) if order.price else inst.price_str(inst.to_ticks(exit_price)),
            "closedSize": inst.qty_str(closed), "avgExitPrice": money(exit_price), "execType": "Trade",
            "fillCount": "1", "cumExitValue": money(exit_price * closed_d), "openFee": money(open_fee),
            "closeFee": money(close_fee),
        }

    # --- position TP/SL --------------------------------------------------------------------------

    def _tpsl_orders(self, pos: Position) -> list[Order]:
        return [o for o in self.open_orders.values() if o.status == "Untriggered" and o.symbol == pos.symbol
                and o.position_idx == pos.idx and o.stop_order_type in ("TakeProfit", "StopLoss")]

    def _set_position_tpsl(self, pos: Position, tp: int | None, sl: int | None, tp_by: str, sl_by: str, t: int,
                           cancel_missing: bool = False) -> list[Order]:
        """Create, move or (with `cancel_missing`) remove the position's TP/SL orders."""
        touched = []
        existing = {o.stop_order_type: o for o in self._tpsl_orders(pos)}
        for kind, level, by in (("TakeProfit", tp, tp_by), ("StopLoss", sl, sl_by)):
            current = existing.get(kind)
            if level is None:
                if cancel_missing and current is not None:
                    self._close_order(current, "Deactivated", t, "CancelByUser")
                    touched.append(current)
                    setattr(pos, "take_profit" if kind == "TakeProfit" else "stop_loss", None)
                continue
            setattr(pos, "take_profit" if kind == "TakeProfit" else "stop_loss", level)
            long = pos.side == "Buy"
            direction = (1 if long else 2) if kind == "TakeProfit" else (2 if long else 1)
            if current is not None:
                current.trigger_price = level
                current.trigger_direction = direction
                current.trigger_by = by or "LastPrice"
                current.qty = pos.size
                current.updated = t
                touched.append(current)
                continue
            order = Order(
                order_id=self.ex.ids.uuid("order"), link_id="", symbol=pos.symbol,
                side="Sell" if long else "Buy", order_type="Market", qty=pos.size, price=None, tif="GTC",
                reduce_only=True, close_on_trigger=True, position_idx=pos.idx, created=t, seq=self._next_seq(),
                updated=t, status="Untriggered", stop_order_type=kind, trigger_price=level,
                trigger_direction=direction, trigger_by=by or "LastPrice", tpsl_mode="Full",
                create_type="CreateByTakeProfit" if kind == "TakeProfit" else "CreateByStopLoss",
                last_price_on_created=self.last(pos.symbol, t),
            )
            self._add(order)
            touched.append(order)
        return touched

    def _resize_tpsl(self, pos: Position, t: int) -> list[Order]:
        """Full-mode TP/SL cover the whole position: follow its size."""
        touched = []
        for order in self._tpsl_orders(pos):
            if pos.size and order.qty != pos.size:
                order.qty = pos.size
                order.updated = t
                touched.append(order)
        return touched

    def _clear_position_orders(self, pos: Position, t: int) -> list[Order]:
        """A flat position takes its TP/SL and resting reduce-only orders with it."""
        touched = []
        for order in list(self.open_orders.values()):
            if not order.is_open or order.symbol != pos.symbol or order.position_idx != pos.idx:
                continue
            if order.stop_order_type in ("TakeProfit", "StopLoss"):
                self._close_order(order, "Deactivated", t, "CancelByTpSlTsClear")
                touched.append(order)
            elif order.reduce_only and order.status in ("New", "PartiallyFilled"):
                self._close_order(order, "Cancelled", t, "CancelByReduceOnly")
                touched.append(order)
        pos.take_profit = pos.stop_loss = None
        return touched

    # --- the market moves ------------------------------------------------------------------------

    def _watched(self, symbol: str) -> list[Order]:
        return [o for o in self.open_orders.values() if o.symbol == symbol and o.is_open
                and (o.status == "Untriggered" or o.price is not None)]

    def _level(self, order: Order) -> tuple[int, int] | None:
        """(level, direction) at which the order acts: 1 = when the price rises to it, 2 = falls to it."""
        if order.status == "Untriggered":
            return (order.trigger_price, order.trigger_direction) if order.trigger_price else None
        if order.price is None:
            return None
        return (order.price, 2) if order.side == "Buy" else (order.price, 1)

    def on_path(self, t0: int, t1: int) -> None:
        """The price walks from t0 to t1; act on every level it crosses, in time order."""
        for symbol, model in self.ex.models.items():
            if not self._watched(symbol):
                continue
            cuts = [t0, *model.path_knots(t0, t1), t1]
            for a, b in zip(cuts, cuts[1:]):
                self._sweep(symbol, a, b, gap_price=None)

    def on_jump(self, symbol: str, t: int, before: int, after: int) -> None:
        """`set_price` gapped the market from `before` to `after` at t."""
        self._sweep(symbol, t, t, gap_price=(before, after))

    def _sweep(self, symbol: str, a: int, b: int, gap_price: tuple[int, int] | None) -> None:
        handled: set[str] = set()
        while True:
            best = None
            for order in self._watched(symbol):
                if order.order_id in handled:
                    continue
                hit = self._crossing(order, symbol, a, b, gap_price)
                if hit is not None and (best is None or (hit[0], order.seq) < (best[0], best[1].seq)):
                    best = (hit[0], order, hit[1])
            if best is None:
                return
            t_hit, order, level = best
            handled.add(order.order_id)
            self._act(order, t_hit, level, gap_price[1] if gap_price else None)

    def _crossing(self, order: Order, symbol: str, a: int, b: int, gap: tuple[int, int] | None) -> tuple[int, int] | None:
        spec = self._level(order)
        if spec is None:
            return None
        level, direction = spec
        by = order.trigger_by if order.status == "Untriggered" else "LastPrice"
        if gap is not None:
            pa, pb = gap
            if by != "LastPrice":
                pb = self.price_of(symbol, by, b)
        else:
            pa, pb = self.price_of(symbol, by, a), self.price_of(symbol, by, b)
        if direction == 1 and pb >= level > pa or direction == 2 and pb <= level < pa:
            if gap is not None or pb == pa:
                return b, level
            frac = (level - pa) / (pb - pa)
            return min(b, a + math.ceil(frac * (b - a))), level
        return None

    def _act(self, order: Order, t: int, level: int, gap_to: int | None) -> None:
        if order.status == "Untriggered":
            self._trigger(order, t, level, gap_to)
        else:
            # A resting limit order: filled at its price as maker.
            assert order.price is not None
            self._fill(order, order.price, is_maker=True, t=t)

    def _trigger(self, order: Order, t: int, level: int, gap_to: int | None) -> None:
        pos = self._position_for(order, t)
        order.status = "Triggered"
        order.updated = t
        if order.stop_order_type in ("TakeProfit", "StopLoss"):
            if pos.size == 0:
                self._close_order(order, "Deactivated", t, "CancelByTpSlTsClear")
                self._push_orders([order], t)
                return
            order.qty = pos.size
            if order.stop_order_type == "TakeProfit":
                pos.take_profit = None
            else:
                pos.stop_loss = None
        self._push_orders([order], t)
        market = gap_to if gap_to is not None else level
        if order.order_type == "Market":
            order.status = "New"
            self._fill(order, market + 1 if order.side == "Buy" else market, is_maker=False, t=t)
        else:
            order.status = "New"
            self._activate(order, t)

    # --- cancel / amend ---------------------------------------------------------------------------

    def cancel_order(self, p: dict, t: int) -> dict:
        symbol = self._symbol(p)
        order = self._find(p)
        if order is None or order.symbol != symbol or not order.is_open:
            raise SimError(ORDER_NOT_EXISTS, "order not exists or too late to cancel")
        self._cancel(order, t, "CancelByUser")
        self._push_orders([order], t)
        self._push_positions([(symbol, order.position_idx)], t)
        self._push_wallet(t)
        return {"orderId": order.order_id, "orderLinkId": order.link_id}

    def _cancel(self, order: Order, t: int, cancel_type: str) -> None:
        if order.status == "Untriggered":
            self._close_order(order, "Deactivated", t, cancel_type)
            if order.stop_order_type in ("TakeProfit", "StopLoss"):
                pos = self._position_for(order, t)
                setattr(pos, "take_profit" if order.stop_order_type == "TakeProfit" else "stop_loss", None)
        else:
            self._close_order(order, "Cancelled", t, cancel_type)

    def cancel_all(self, p: dict, t: int) -> dict:
        cat = p.get("category")
        if cat != "linear":
            raise param_error("params error: category invalid" if cat else "params error: category is required")
        symbol, base, settle = p.get("symbol"), p.get("baseCoin"), p.get("settleCoin")
        if not (symbol or base or settle):
            raise param_error("params error: symbol, baseCoin or settleCoin is required for linear")
        if symbol and symbol not in self.ex.models:
            raise param_error("params error: symbol invalid")
        flt = p.get("orderFilter")
        stop_type = p.get("stopOrderType")
        if flt not in (None, "", "Order", "StopOrder", "OpenOrder"):
            raise param_error("params error: orderFilter invalid")
        if stop_type and (stop_type != "Stop" or flt != "StopOrder"):
            raise param_error("params error: stopOrderType only supports Stop with orderFilter=StopOrder")
        picked = []
        for order in self.orders.values():
            if not order.is_open:
                continue
            if symbol and order.symbol != symbol or base and self.inst(order.symbol).base_coin != base:
                continue
            if settle and settle != "USDT":
                continue
            conditional = order.status == "Untriggered"
            if flt == "Order" and conditional or flt == "StopOrder" and not conditional:
                continue
            if stop_type == "Stop" and order.stop_order_type != "Stop":
                continue
            picked.append(order)
        for order in picked:
            self._cancel(order, t, "CancelByUser")
        if picked:
            self._push_orders(picked, t)
            self._push_positions([(o.symbol, o.position_idx) for o in picked], t)
            self._push_wallet(t)
        return {"list": [{"orderId": o.order_id, "orderLinkId": o.link_id} for o in picked], "success": "1"}

    def amend_order(self, p: dict, t: int) -> dict:
        symbol = self._symbol(p)
        order = self._find(p)
        if order is None or order.symbol != symbol or not order.is_open:
            raise SimError(ORDER_NOT_EXISTS, "order not exists or too late to amend")
        inst = self.inst(symbol)
        changed = False
        qty = _dec(p, "qty")
        if qty is not None:
            steps = self._steps(inst, qty)
            if steps < order.cum_qty:
                raise param_error("params error: qty below the filled qty")
            if steps != order.qty:
                order.qty, changed = steps, True
        price = _dec(p, "price")
        if price is not None and order.order_type == "Limit":
            ticks = self._ticks(inst, price, "price")
            if ticks != order.price:
                order.price, changed = ticks, True
        trigger = self._opt_ticks(inst, p, "triggerPrice")
        if trigger is not None and order.status == "Untriggered" and trigger != order.trigger_price:
            order.trigger_price, changed = trigger, True
        for name in ("takeProfit", "stopLoss"):
            value = _dec(p, name)
            if value is None:
                continue
            ticks = None if value == 0 else self._ticks(inst, value, name)
            attr = "take_profit" if name == "takeProfit" else "stop_loss"
            if getattr(order, attr) != ticks:
                setattr(order, attr, ticks)
                changed = True
        if not changed:
            raise param_error("The order remains unchanged as the parameters entered match the existing ones.")
        order.updated = t
        if order.stop_order_type in ("TakeProfit", "StopLoss"):
            pos = self._position_for(order, t)
            setattr(pos, "take_profit" if order.stop_order_type == "TakeProfit" else "stop_loss", order.trigger_price)
        if order.status in ("New", "PartiallyFilled"):
            last = self.last(symbol, t)
            assert order.price is not None
            crosses = order.price >= last + 1 if order.side == "Buy" else order.price <= last
            if crosses:
                self._fill(order, last + 1 if order.side == "Buy" else last, is_maker=False, t=t)
                return {"orderId": order.order_id, "orderLinkId": order.link_id}
        self._push_orders([order], t)
        self._push_positions([(symbol, order.position_idx)], t)
        return {"orderId": order.order_id, "orderLinkId": order.link_id}

    # --- positions ---------------------------------------------------------------------------------

    def trading_stop(self, p: dict, t: int) -> dict:
        symbol = self._symbol(p)
        mode = p.get("tpslMode")
        if mode not in ("Full", "Partial"):
            raise param_error("params error: tpslMode is required (Full or Partial)")
        if mode == "Partial":
            raise param_error("tpslMode Partial is not supported by the simulator")
        if "positionIdx" not in p:
            raise param_error("params error: positionIdx is required")
        idx = self._position_idx(symbol, p)
        pos = self.position(symbol, idx, t)
        if pos.size == 0:
            raise param_error("can not set tp/sl/ts for zero position")
        inst = self.inst(symbol)
        tp_raw, sl_raw = _dec(p, "takeProfit"), _dec(p, "stopLoss")
        tp = pos.take_profit if tp_raw is None else (None if tp_raw == 0 else self._ticks(inst, tp_raw, "takeProfit"))
        sl = pos.stop_loss if sl_raw is None else (None if sl_raw == 0 else self._ticks(inst, sl_raw, "stopLoss"))
        if (tp, sl) == (pos.take_profit, pos.stop_loss):
            raise SimError(NOT_MODIFIED, "not modified")
        last = self.last(symbol, t)
        self._check_tpsl(pos.side, last, tp if tp != pos.take_profit else None, sl if sl != pos.stop_loss else None)
        touched = self._set_position_tpsl(pos, tp, sl, str(p.get("tpTriggerBy") or "LastPrice"),
                                          str(p.get("slTriggerBy") or "LastPrice"), t, cancel_missing=True)
        pos.updated = t
        self._push_orders(touched, t)
        self._push_positions([(symbol, idx)], t)
        return {}

    def set_leverage(self, p: dict, t: int) -> dict:
        symbol = self._symbol(p)
        buy, sell = _dec(p, "buyLeverage", required=True), _dec(p, "sellLeverage", required=True)
        assert buy is not None and sell is not None
        if not self.hedge[symbol] and buy != sell:
            raise param_error("buy leverage must equal sell leverage in one-way mode")
        inst = self.inst(symbol)
        if not 1 <= buy <= inst.max_leverage:
            raise param_error(f"leverage invalid: must be within [1, {inst.max_leverage}]")
        if buy == self.leverage[symbol]:
            raise SimError(LEVERAGE_NOT_MODIFIED, "leverage not modified")
        self.leverage[symbol] = buy
        for idx in self._position_keys(symbol):
            pos = self.position(symbol, idx, t)
            pos.leverage = buy
            pos.updated = t
        self._push_positions([(symbol, i) for i in self._position_keys(symbol)], t)
        self._push_wallet(t)
        return {}

    def switch_mode(self, p: dict, t: int) -> dict:
        cat = p.get("category")
        if cat != "linear":
            raise param_error("params error: category invalid" if cat else "params error: category is required")
        symbol, coin = p.get("symbol"), p.get("coin")
        if not symbol and not coin:
            raise param_error("params error: symbol or coin is required")
        if symbol and symbol not in self.ex.models:
            raise param_error("params error: symbol invalid")
        try:
            mode = int(p.get("mode"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise param_error("params error: mode is required (0 or 3)") from None
        if mode not in (0, 3):
            raise param_error("params error: mode must be 0 (one-way) or 3 (hedge)")
        symbols = [str(symbol)] if symbol else [s for s in self.ex.models if coin == "USDT"]
        want = mode == 3
        if all(self.hedge[s] == want for s in symbols):
            raise SimError(POSITION_MODE_NOT_MODIFIED, "Position mode is not modified")
        for s in symbols:
            if any(pos.size for (sym, _), pos in self.positions.items() if sym == s):
                raise SimError(POSITION_EXISTS, "position exists, cannot switch position mode")
            if any(o.is_open for o in self.orders.values() if o.symbol == s):
                raise SimError(OPEN_ORDERS_EXIST, "open orders exist, cannot switch position mode")
        for s in symbols:
            self.hedge[s] = want
            for key in [k for k in self.positions if k[0] == s]:
                del self.positions[key]
        return {}

    def position_list(self, p: dict, t: int) -> dict:
        cat = p.get("category")
        if cat != "linear":
            raise param_error("params error: category invalid" if cat else "params error: category is required")
        symbol, settle = p.get("symbol"), p.get("settleCoin")
        if not symbol and not settle:
            raise param_error("Missing some parameters that must be filled in, symbol or settleCoin")
        if symbol and symbol not in self.ex.models:
            raise param_error("params error: symbol invalid")
        rows = []
        if self.ex.faults.state.empty_positions.take():
            return {"list": [], "nextPageCursor": "", "category": "linear"}
        symbols = [str(symbol)] if symbol else list(self.ex.models)
        for s in symbols:
            for idx in self._position_keys(s):
                pos = self.positions.get((s, idx))
                if pos is None:
                    pos = Position(s, idx, self.leverage[s], created=t)
                if symbol or pos.size:
                    rows.append(pos.wire(self.inst(s), self.mark(s, t), ws=False))
        return {"list": rows, "nextPageCursor": "", "category": "linear"}

    # --- queries -------------------------------------------------------------------------------------

    def _order_rows(self, orders: list[Order], p: dict, max_limit: int, default: int) -> dict:
        limit = _page_limit(p, max_limit, default)
        offset = _cursor(p)
        page = orders[offset:offset + limit]
        rows = []
        for order in page:
            zero = order.zero_avg_reads > 0
            if zero:
                order.zero_avg_reads -= 1
            rows.append(order.wire(self.inst(order.symbol), ws=False, zero_avg=zero))
        more = offset + limit < len(orders)
        return {"list": rows, "nextPageCursor": f"page_args%3D{offset + limit}" if more else "", "category": "linear"}

    def _order_filter(self, p: dict) -> list[Order]:
        symbol, base, settle = p.get("symbol"), p.get("baseCoin"), p.get("settleCoin")
        oid, link = p.get("orderId"), p.get("orderLinkId")
        flt = p.get("orderFilter")
        out = []
        for order in self.orders.values():
            if symbol and order.symbol != symbol or base and self.inst(order.symbol).base_coin != base:
                continue
            if settle and settle != "USDT" or oid and order.order_id != oid or link and order.link_id != link:
                continue
            conditional = bool(order.stop_order_type) and order.status in ("Untriggered", "Deactivated")
            if flt == "Order" and conditional or flt in ("StopOrder", "tpslOrder") and not order.stop_order_type:
                continue
            out.append(order)
        return out

    def realtime(self, p: dict, t: int) -> dict:
        cat = p.get("category")
        if cat != "linear":
            raise param_error("params error: category invalid" if cat else "params error: category is required")
        if not (p.get("symbol") or p.get("baseCoin") or p.get("settleCoin")):
            raise param_error("params error: symbol, baseCoin or settleCoin is required for linear")
        open_only = str(p.get("openOnly") or "0")
        if open_only == "1":
            recent = set(self.closed_ids[-RECENT_CLOSED:])
            orders = [o for o in self._order_filter(p) if o.order_id in recent]
        else:
            orders = [o for o in self._order_filter(p) if o.is_open]
        orders.sort(key=lambda o: (o.created, o.seq), reverse=True)
        return self._order_rows(orders, p, 50, 20)

    def history(self, p: dict, t: int) -> dict:
        cat = p.get("category")
        if cat != "linear":
            raise param_error("params error: category invalid" if cat else "params error: category is required")
        start, end = _window(p, t)
        status = p.get("orderStatus")
        orders = [o for o in self._order_filter(p) if start <= o.created <= end and (not status or o.status == status)]
        orders.sort(key=lambda o: (o.created, o.seq), reverse=True)
        return self._order_rows(orders, p, 50, 20)

    def execution_list(self, p: dict, t: int) -> dict:
        cat = p.get("category")
        if cat != "linear":
            raise param_error("params error: category invalid" if cat else "params error: category is required")
        start, end = _window(p, t)
        rows = [e for e in self.executions if start <= e.exec_time <= end]
        for name in ("symbol", "orderId", "orderLinkId", "execType"):
            value = p.get(name)
            if value:
                rows = [e for e in rows if e.data.get(name) == value]
        rows.sort(key=lambda e: (e.exec_time, e.data["seq"]), reverse=True)
        limit, offset = _page_limit(p, 100, 50), _cursor(p)
        page = rows[offset:offset + limit]
        more = offset + limit < len(rows)
        return {"nextPageCursor": f"page_args%3D{offset + limit}" if more else "", "category": "linear",
                "list": [e.wire(ws=False) for e in page]}

    def closed_pnl_list(self, p: dict, t: int) -> dict:
        cat = p.get("category")
        if cat != "linear":
            raise param_error("params error: category invalid" if cat else "params error: category is required")
        start, end = _window(p, t)
        rows = [r for r in self.closed_pnl if start <= int(r["updatedTime"]) <= end]
        if p.get("symbol"):
            rows = [r for r in rows if r["symbol"] == p["symbol"]]
        rows.reverse()
        limit, offset = _page_limit(p, 100, 50), _cursor(p)
        more = offset + limit < len(rows)
        return {"nextPageCursor": f"page_args%3D{offset + limit}" if more else "", "category": "linear",
                "list": rows[offset:offset + limit]}

    def wallet_balance(self, p: dict, t: int) -> dict:
        if p.get("accountType") != "UNIFIED":
            raise param_error("accountType only support UNIFIED")
        coins = p.get("coin")
        item = self.wallet_item(t)
        if coins and "USDT" not in str(coins).split(","):
            item["coin"] = []
        return {"list": [item]}

    def fee_rate(self, p: dict, t: int) -> dict:
        cat = p.get("category")
        if cat != "linear":
            raise param_error("params error: category invalid" if cat else "params error: category is required")
        symbol = p.get("symbol")
        if symbol and symbol not in self.ex.models:
            raise param_error("params error: symbol invalid")
        symbols = [symbol] if symbol else list(self.ex.models)
        return {"list": [{"symbol": s, "takerFeeRate": dec_str(TAKER_FEE), "makerFeeRate": dec_str(MAKER_FEE),
                          "baseCoin": ""} for s in symbols]}

    def api_key_info(self, now: int) -> dict:
        wallet = ["AccountTransfer", "SubMemberTransfer"] + (["Withdraw"] if self.withdraw_permission else [])
        return {
            "id": "1", "note": "simulator", "apiKey": self.ex.api_key, "readOnly": 0, "secret": "",
            "permissions": {"ContractTrade": ["Order", "Position"], "Spot": [], "Wallet": wallet, "Options": [],
                            "Derivatives": [], "CopyTrading": [], "BlockTrade": [], "Exchange": [], "NFT": [],
                            "Affiliate": [], "Earn": []},
            "ips": ["*"], "type": 1, "deadlineDay": 90, "expiredAt": "", "createdAt": "", "unified": 0, "uta": 1,
            "userID": 1, "inviterID": 0, "vipLevel": "No VIP", "mktMakerLevel": "0", "affiliateID": 0,
            "rsaPublicKey": "", "isMaster": True, "parentUid": "0", "kycLevel": "LEVEL_DEFAULT", "kycRegion": "",
        }

    # --- funding ---------------------------------------------------------------------------------------

    def settle_funding(self, t: int) -> None:
        """At 00/08/16 UTC every open position pays (or receives) position value x rate."""
        for (symbol, idx), pos in list(self.positions.items()):
            if not pos.size:
                continue
            inst = self.inst(symbol)
            model = self.ex.models[symbol]
            rate = Decimal(model.funding_rate_e6(t)).scaleb(-6)
            mark_ticks = self.mark(symbol, t)
            value = inst.qty_dec(pos.size) * inst.price_dec(mark_ticks)
            fee = value * rate * (1 if pos.side == "Buy" else -1)  # positive: paid by this account
            self.balance -= fee
            self.cum_realised -= fee
            pos.cur_realised -= fee
            pos.cum_realised -= fee
            pos.updated = t
            pos.seq = self._next_seq()
            data = {
                "symbol": symbol, "orderType": "UNKNOWN", "underlyingPrice": "", "orderLinkId": "",
                "side": pos.side, "indexPrice": inst.price_str(model.index_ticks(t, model.last_ticks(t))),
                "orderId": "", "stopOrderType": "UNKNOWN", "leavesQty": "0", "execTime": str(t),
                "feeCurrency": "USDT", "isMaker": False, "execFee": money(fee), "feeRate": dec_str(rate),
                "execId": self.ex.ids.uuid("exec"), "tradeIv": "", "blockTradeId": "",
                "markPrice": inst.price_str(mark_ticks), "execPrice": inst.price_str(mark_ticks), "markIv": "",
                "orderQty": "0", "orderPrice": "0", "execValue": money(value), "execType": "Funding",
                "execQty": inst.qty_str(pos.size), "closedSize": "0", "extraFees": "", "seq": self._next_seq(),
                "createType": "",
            }
            execution = Execution(data, {"category": "linear", "isLeverage": "", "marketUnit": "", "execPnl": "0",
                                         "extraFees": []}, t)
            self.executions.append(execution)
            self.ex.push_private("execution", [execution.wire(ws=True)], t)
            self._push_positions([(symbol, idx)], t)
            self._push_wallet(t)
            log.info("sim.funding", symbol=symbol, rate=dec_str(rate), fee=money(fee))

    def push_position_marks(self, t: int) -> None:
        """Bybit pushes positions on order events, not on every mark move: nothing to do."""

    # --- disconnect-cancel-all (REFERENCE.md 3.14) -------------------------------------------------------

    def set_dcp(self, p: dict, t: int) -> dict:
        if not self.dcp_available:
            raise SimError(PERMISSION_DENIED, "Disconnected-CancelAll-Prevention is not enabled for this account")
        product = p.get("product") or "OPTIONS"
        if product not in ("OPTIONS", "DERIVATIVES", "SPOT"):
            raise param_error("params error: product invalid")
        try:
            window = int(p.get("timeWindow"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise param_error("params error: timeWindow is required") from None
        if not 3 <= window <= 300:
            raise param_error("params error: timeWindow must be within [3, 300]")
        if product == "DERIVATIVES":
            self.dcp_window_s = window
        log.info("sim.dcp.window", product=product, seconds=window)
        from infra.sim.rest import Raw  # noqa: PLC0415 - rest imports this module's owner

        return Raw(retCode=0, retMsg="success")

    def dcp_info(self, p: dict, t: int) -> dict:
        if not self.dcp_available:
            return {"dcpInfos": []}
        return {"dcpInfos": [{"product": "DERIVATIVES", "dcpStatus": "ON", "timeWindow": str(self.dcp_window_s)}]}

    def on_dcp_subscribed(self, conn: Any) -> None:
        self.dcp_conns[conn] = None
        self.dcp_armed = True
        self.dcp_gone_since = None

    def on_private_gone(self, conn: Any, t: int) -> None:
        if conn in self.dcp_conns:
            del self.dcp_conns[conn]
            if not self.dcp_conns and self.dcp_armed:
                self.dcp_gone_since = t

    def dcp_due(self) -> int | None:
        if not self.dcp_available or not self.dcp_armed or self.dcp_gone_since is None:
            return None
        return self.dcp_gone_since + self.dcp_window_s * 1000 + 1

    def check_dcp(self, t: int) -> None:
        due = self.dcp_due()
        if due is None or t < due:
            return
        self.dcp_armed = False
        self.dcp_gone_since = None
        picked = [o for o in self.orders.values() if o.is_open and o.stop_order_type not in ("TakeProfit", "StopLoss")]
        for order in picked:
            self._cancel(order, t, "CancelByDCP")
        log.warning("sim.dcp.fired", cancelled=len(picked), window_s=self.dcp_window_s)
        if picked:
            self._push_orders(picked, t)
            self._push_wallet(t)


def _page_limit(p: dict, hi: int, default: int) -> int:
    value = p.get("limit")
    if value in (None, ""):
        return default
    try:
        n = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise param_error("params error: limit invalid") from None
    if not 1 <= n <= hi:
        raise param_error(f"params error: limit must be within [1, {hi}]")
    return n


def _cursor(p: dict) -> int:
    value = str(p.get("cursor") or "")
    if not value:
        return 0
    try:
        return int(value.replace("page_args%3D", "").replace("page_args=", ""))
    except ValueError:
        raise param_error("params error: cursor invalid") from None


def _window(p: dict, t: int) -> tuple[int, int]:
    """Bybit's 7-day query window: none -> last 7 days; start only -> 7 days on; end only -> 7 days back."""
    start, end = p.get("startTime"), p.get("endTime")
    try:
        s = int(start) if start not in (None, "") else None  # type: ignore[arg-type]
        e = int(end) if end not in (None, "") else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise param_error("params error: startTime/endTime invalid") from None
    if s is None and e is None:
        return t - WEEK_MS, t
    if e is None:
        assert s is not None
        return s, s + WEEK_MS
    if s is None:
        return e - WEEK_MS, e
    if e < s or e - s > WEEK_MS:
        raise param_error("params error: the time range must be within 7 days")
    return s, e


__all__ = ["Account", "MIN_MS"]
