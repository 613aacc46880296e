"""What the public market topics and the REST tickers say: tickers, ticker deltas, klines.

Tickers are pushed as Bybit does: a snapshot on subscribe, then deltas that
carry only the fields that changed, each with the next `cs`. A connection
gets a topic's deltas only once it was sent that topic's snapshot, on every
connection and every (re)subscription: a delta before its snapshot ended
pybit's stream (REFERENCE.md 5.2). The `delta_before_snapshot` fault switch
does it on purpose. Klines are
pushed as snapshots of the running bar, and once more with confirm=true when
the bar closes.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Mapping

from infra.sim.history import ws_kline
from infra.sim.instruments import fixed
from infra.sim.market import FUNDING_MS, MIN_MS, Bar, SymbolModel
from infra.sim.wire import dec_fixed, dec_str, dumps
from infra.sim.ws import Conn
from messages.types import align_ms, interval_ms, is_aligned


class MarketFeed:
    def __init__(self, models: dict[str, SymbolModel], subs: Mapping[str, Mapping[Conn, None]]):
        self.models = models
        self.subs = subs  # topic -> subscribed connections, kept by the sessions
        self._ticker: dict[str, dict[str, str]] = {}
        self._ticker_cs: dict[str, int] = {}
        self._ticker_at: dict[str, int] = {}
        self._stats: dict[str, tuple[int, tuple[int, ...]]] = {}
        self._flood_n = 0

    def forget_stats(self, symbol: str) -> None:
        """The 24 h statistics of `symbol` changed under the cache (a price shock)."""
        self._stats.pop(symbol, None)

    def _stats24(self, symbol: str, m: int) -> tuple[int, ...]:
        cached = self._stats.get(symbol)
        if cached is not None and cached[0] == m:
            return cached[1]
        model = self.models[symbol]
        day = model.aggregate(m - 1440, m)
        hour_ago = model.aggregate(m - 60, m - 59)
        assert day is not None and hour_ago is not None
        stats = (*day, hour_ago[0])
        self._stats[symbol] = (m, stats)
        return stats

    def _ticker_fields(self, symbol: str, t: int) -> dict[str, str]:
        """Every ticker field at time t (no tickDirection), as strings."""
        model = self.models[symbol]
        inst = model.inst
        last = model.last_ticks(t)
        mark = model.mark_ticks(t, last)
        index = model.index_ticks(t, last)
        prev24, hi, lo, _, vol, turnover, prev1h = self._stats24(symbol, t // MIN_MS)
        _, ph, pl, _, pv, pt = model.minute_partial(t)
        hi, lo, vol, turnover = max(hi, ph), min(lo, pl), vol + pv, turnover + pt
        pcnt = (Decimal(last - prev24) / Decimal(prev24)).quantize(Decimal("0.000001"))
        next_funding = (t // FUNDING_MS + 1) * FUNDING_MS
        rate = Decimal(model.funding_rate_e6(next_funding)).scaleb(-6)
        bid_size, ask_size = model.book_sizes(t)
        oi = model.open_interest_steps(t)
        p = inst.price_str
        return {
            "symbol": symbol,
            "price24hPcnt": dec_str(pcnt),
            "lastPrice": p(last),
            "prevPrice24h": p(prev24),
            "highPrice24h": p(hi),
            "lowPrice24h": p(lo),
            "prevPrice1h": p(prev1h),
            "markPrice": p(mark),
            "indexPrice": p(index),
            "openInterest": inst.qty_str(oi),
            "openInterestValue": dec_fixed(inst.qty_dec(oi) * inst.price_dec(mark), 2),
            "turnover24h": fixed(turnover, 4),
            "volume24h": inst.qty_str(vol),
            "fundingRate": dec_str(rate),
            "nextFundingTime": str(next_funding),
            "bid1Price": p(last),
            "bid1Size": inst.qty_str(bid_size),
            "ask1Price": p(last + 1),
            "ask1Size": inst.qty_str(ask_size),
            "fundingIntervalHour": "8",
            "fundingCap": "0.005",
        }

    def rest_ticker(self, symbol: str, t: int) -> dict[str, str]:
        f = self._ticker_fields(symbol, t)
        return {
            "symbol": symbol, "lastPrice": f["lastPrice"], "indexPrice": f["indexPrice"], "markPrice": f["markPrice"],
            "prevPrice24h": f["prevPrice24h"], "price24hPcnt": f["price24hPcnt"], "highPrice24h": f["highPrice24h"],
            "lowPrice24h": f["lowPrice24h"], "prevPrice1h": f["prevPrice1h"], "openInterest": f["openInterest"],
            "openInterestValue": f["openInterestValue"], "turnover24h": f["turnover24h"], "volume24h": f["volume24h"],
            "fundingRate": f["fundingRate"], "nextFundingTime": f["nextFundingTime"], "predictedDeliveryPrice": "",
            "basisRate": "", "deliveryFeeRate": "", "deliveryTime": "0", "ask1Size": f["ask1Size"],
            "bid1Price": f["bid1Price"], "ask1Price": f["ask1Price"], "bid1Size": f["bid1Size"], "basis": "",
            "preOpenPrice": "", "preQty": "", "curPreListingPhase": "", "fundingIntervalHour": "8",
            "basisRateYear": "", "fundingCap": "0.005",
        }

    def _ws_ticker_state(self, symbol: str, t: int) -> dict[str, str]:
        fields = self._ticker_fields(symbol, t)
        old = self._ticker.get(symbol)
        direction = "ZeroPlusTick"
        if old is not None:
            before, after = Decimal(old["lastPrice"]), Decimal(fields["lastPrice"])
            if after > before:
                direction = "PlusTick"
            elif after < before:
                direction = "MinusTick"
            else:
                direction = old["tickDirection"] if old["tickDirection"].startswith("Zero") else "Zero" + old["tickDirection"]
        state = {"symbol": symbol, "tickDirection": direction}
        state.update((k, v) for k, v in fields.items() if k != "symbol")
        state.update(preOpenPrice="", preQty="", curPreListingPhase="")
        return state

    def _publish_ticker(self, symbol: str, t: int) -> None:
        state = self._ws_ticker_state(symbol, t)
        old = self._ticker.get(symbol)
        self._ticker[symbol] = state
        self._ticker_at[symbol] = t
        if old is None:
            self._ticker_cs[symbol] = self._ticker_cs.get(symbol, 0) + 1
            return
        changed = {k: v for k, v in state.items() if old.get(k) != v and k != "symbol"}
        if not changed:
            return
        cs = self._ticker_cs[symbol] = self._ticker_cs[symbol] + 1
        topic = f"tickers.{symbol}"
        subs = self.subs.get(topic)
        if subs:
            text = dumps({"topic": topic, "type": "delta", "data": {"symbol": symbol, **changed},
                          "cs": cs, "ts": t})
            for conn in subs:
                if topic in conn.snapshotted:
                    conn.send(text)

    def flood_ticker_deltas(self, per_symbol: int, t: int) -> int:
        """`per_symbol` ticker deltas for every subscribed symbol, for load: only the book sizes
        change, so prices stay the model's. Each carries the next `cs` and `ts` = t."""
        sent = 0
        for symbol, state in self._ticker.items():
            topic = f"tickers.{symbol}"
            subs = [c for c in self.subs.get(topic, ()) if topic in c.snapshotted]
            if not subs:
                continue
            inst = self.models[symbol].inst
            for _ in range(per_symbol):
                self._flood_n += 1
                bid, ask = inst.qty_str(1 + self._flood_n % 997), inst.qty_str(1 + (self._flood_n * 7) % 991)
                state["bid1Size"], state["ask1Size"] = bid, ask
                cs = self._ticker_cs[symbol] = self._ticker_cs[symbol] + 1
                # Formatted, not dumps(): at thousands a second the venue's own cost must stay small
                # next to the client's (all parts are plain ASCII tokens, no escaping needed).
                text = (f'{{"topic":"{topic}","type":"delta","data":{{"symbol":"{symbol}","bid1Size":"{bid}",'
                        f'"ask1Size":"{ask}"}},"cs":{cs},"ts":{t}}}')
                for conn in subs:
                    conn.send(text)
                    sent += 1
        return sent

    def send_stray_delta(self, conn: Conn, topic: str, t: int) -> None:
        """A ticker delta to `conn` although it has no snapshot of `topic` (a fault switch)."""
        symbol = topic.split(".")[1]
        conn.send_obj({"topic": topic, "type": "delta", "data": {"symbol": symbol, "bid1Size": "1"},
                       "cs": self._ticker_cs.get(symbol, 0) + 1, "ts": t})

    def send_snapshot(self, conn: Conn, topic: str, t: int) -> None:
        """The first frame of a new subscription to `topic` (tickers.* or kline.*)."""
        if topic.startswith("tickers."):
            self._send_ticker_snapshot(conn, topic.split(".")[1], t)
        elif topic.startswith("kline."):
            _, interval, symbol = topic.split(".")
            conn.send(self._kline_frame(topic, symbol, interval, t))

    def _send_ticker_snapshot(self, conn: Conn, symbol: str, t: int) -> None:
        if self._ticker_at.get(symbol) != t:
            self._publish_ticker(symbol, t)
        topic = f"tickers.{symbol}"
        conn.send_obj({"topic": topic, "type": "snapshot", "data": self._ticker[symbol],
                       "cs": self._ticker_cs[symbol], "ts": t})
        conn.snapshotted.add(topic)

    def _kline_frame(self, topic: str, symbol: str, interval: str, t: int, bar: Bar | None = None,
                     confirm: bool = False) -> str:
        model = self.models[symbol]
        if bar is None:
            bar = model.running_bar(interval, align_ms(interval, t), t)
        return dumps({"topic": topic, "data": [ws_kline(model, interval, bar, confirm, t)], "ts": t, "type": "snapshot"})

    def _kline_topics(self) -> list[tuple[str, str, str]]:
        out = []
        for topic, subs in self.subs.items():
            if subs and topic.startswith("kline."):
                _, interval, symbol = topic.split(".")
                out.append((topic, interval, symbol))
        return out

    def publish(self, t: int, klines: bool = True) -> None:
        for symbol in self.models:
            if self.subs.get(f"tickers.{symbol}"):
                self._publish_ticker(symbol, t)
        if klines:
            for topic, interval, symbol in self._kline_topics():
                text = self._kline_frame(topic, symbol, interval, t)
                for conn in self.subs[topic]:
                    conn.send(text)

    def close_bars(self, b: int) -> None:
        """Push confirm=true for every subscribed kline whose bar closes at `b`."""
        for topic, interval, symbol in self._kline_topics():
            if not is_aligned(interval, b):
                continue
            step = interval_ms(interval)
            prev_open = b - step if step is not None else align_ms("M", b - 1)
            bar = self.models[symbol].closed_bars(interval, prev_open, 1)[0]
            text = self._kline_frame(topic, symbol, interval, b, bar=bar, confirm=True)
            for conn in self.subs[topic]:
                conn.send(text)
