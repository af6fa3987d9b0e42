"""The scoring service (v0): consumes closed candles, publishes grades.

v0 publishes one documented, reproducible measure per daily candle: the
Trader Grade slot carries RSI(14) with Wilder smoothing (0..100) on daily
closes, labelled ``method="v0-rsi14"``; the Investor Grade slot is left
empty. Issue #4 replaces this with the real Trader/Investor Grades, signals
and levels on the same topics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tokenpulse_shared.events import CandleEvent, GradeEvent, Interval
from tokenpulse_shared.service import Context
from tokenpulse_shared.topics import CANDLES, GRADES

log = logging.getLogger(__name__)


@dataclass
class WilderRSI:
    """RSI(n) with Wilder smoothing, seeded by the simple average of the first n changes (TA-Lib)."""

    n: int = 14
    prev: float | None = None
    count: int = 0
    avg_gain: float = 0.0
    avg_loss: float = 0.0

    def update(self, close: float) -> float | None:
        if self.prev is None:
            self.prev = close
            return None
        change = close - self.prev
        self.prev = close
        gain, loss = max(change, 0.0), max(-change, 0.0)
        self.count += 1
        if self.count <= self.n:
            self.avg_gain += gain / self.n
            self.avg_loss += loss / self.n
            if self.count < self.n:
                return None
        else:
            self.avg_gain = (self.avg_gain * (self.n - 1) + gain) / self.n
            self.avg_loss = (self.avg_loss * (self.n - 1) + loss) / self.n
        if self.avg_loss == 0:
            return 100.0 if self.avg_gain > 0 else 50.0
        rs = self.avg_gain / self.avg_loss
        return 100.0 - 100.0 / (1.0 + rs)


class ScoringService:
    name = "scoring"

    def __init__(self) -> None:
        self.ctx: Context | None = None
        self.rsi: dict[str, WilderRSI] = {}
        self.last_ts: dict[str, int] = {}

    def register(self, ctx: Context) -> None:
        self.ctx = ctx
        ctx.bus.subscribe(CANDLES, self.name, self.on_candles)

    async def on_candles(self, candles: list[CandleEvent]) -> None:
        assert self.ctx is not None
        grades = []
        for candle in candles:
            if candle.interval is not Interval.D1 or not candle.closed:
                continue
            ts = int(candle.ts.timestamp())
            if ts <= self.last_ts.get(candle.symbol, -1):
                continue  # redelivered or out-of-order: state only moves forward
            self.last_ts[candle.symbol] = ts
            value = self.rsi.setdefault(candle.symbol, WilderRSI()).update(candle.close)
            if value is not None:
                grades.append(
                    GradeEvent(
                        symbol=candle.symbol,
                        ts=candle.ts,
                        trader_grade=round(value, 4),
                        components={"rsi_14": value},
                        method="v0-rsi14",
                    )
                )
        if grades:
            await self.ctx.bus.publish(GRADES, grades)

    async def start(self, ctx: Context) -> None:
        return None

    async def stop(self) -> None:
        return None
