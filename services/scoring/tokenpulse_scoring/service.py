"""The scoring service: closed candles in; indicators (and, for now, an interim grade) out.

For every (symbol, interval) it keeps an :class:`IndicatorState` and publishes an
:class:`IndicatorEvent` per closed candle on ``tokenpulse.indicators.v1``.

* Order and duplicates: a candle older than the last one seen, or the same candle again
  with no higher version, changes nothing. A correction of the latest candle (same time,
  higher version) undoes it and recomputes; a correction of an older candle is counted in
  ``stale_corrections`` and logged (recomputing the chain after it is issue #4's next step).
* Restart: when the process has the store (embedded mode, or ``TOKENPULSE_CLICKHOUSE_URL``
  pointing at a server), it first replays the stored candles into its state, so a restarted
  instance continues with exactly the values it would have had; handlers wait for that.
* v0 grade: the Trader Grade slot carries RSI(14) of daily closes (``method="v0-rsi14"``)
  until issue #4's Trader/Investor Grades replace it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from tokenpulse_shared.events import CandleEvent, GradeEvent, IndicatorEvent, Interval
from tokenpulse_shared.service import Context
from tokenpulse_shared.topics import CANDLES, GRADES, INDICATORS

from tokenpulse_scoring.indicators import IndicatorState

log = logging.getLogger(__name__)


@dataclass
class Series:
    state: IndicatorState = field(default_factory=IndicatorState)
    last_ms: int = -1
    last_version: int = -1
    before_last: Any = None


class ScoringService:
    name = "scoring"

    def __init__(self) -> None:
        self.ctx: Context | None = None
        self.series: dict[tuple[str, Interval], Series] = {}
        self.stale_corrections = 0
        self.ready = asyncio.Event()

    def register(self, ctx: Context) -> None:
        self.ctx = ctx
        ctx.bus.subscribe(CANDLES, self.name, self.on_candles, max_batch=5000)

    def apply(self, candle: CandleEvent) -> dict[str, float | None] | None:
        """Feed one candle; returns its indicator values, or None when it changes nothing."""
        key = (candle.symbol, candle.interval)
        s = self.series.get(key)
        if s is None:
            s = self.series[key] = Series()
        ts_ms = int(candle.ts.timestamp() * 1000)
        if ts_ms > s.last_ms:
            s.before_last = s.state.snapshot()
        elif ts_ms == s.last_ms and candle.version > s.last_version:
            s.state.restore(s.before_last)  # a correction of the latest candle: undo it, then redo
        else:
            if ts_ms < s.last_ms and candle.version > 0:
                self.stale_corrections += 1
                log.info("correction of an older %s %s candle at %s not applied", *key, candle.ts)
            return None
        s.last_ms, s.last_version = ts_ms, candle.version
        return s.state.update(candle.high, candle.low, candle.close)

    async def on_candles(self, candles: list[CandleEvent]) -> None:
        assert self.ctx is not None
        await self.ready.wait()
        indicators, grades = [], []
        for candle in candles:
            if not candle.closed:
                continue
            values = self.apply(candle)
            if values is None:
                continue
            indicators.append(
                IndicatorEvent(
                    symbol=candle.symbol,
                    interval=candle.interval,
                    ts=candle.ts,
                    candle_version=candle.version,
                    **values,
                )
            )
            if candle.interval is Interval.D1 and values["rsi_14"] is not None:
                grades.append(
                    GradeEvent(
                        symbol=candle.symbol,
                        ts=candle.ts,
                        trader_grade=round(values["rsi_14"], 4),
                        components={"rsi_14": values["rsi_14"]},
                        method="v0-rsi14",
                    )
                )
        if indicators:
            await self.ctx.bus.publish(INDICATORS, indicators)
        if grades:
            await self.ctx.bus.publish(GRADES, grades)

    async def warm_up(self) -> int:
        """Replay the stored candles into the state (no events published)."""
        assert self.ctx is not None and self.ctx.store is not None
        rows = await self.ctx.store.query(
            "SELECT symbol, interval, toUnixTimestamp64Milli(ts), high, low, close, version "
            "FROM candles FINAL ORDER BY symbol, interval, ts"
        )
        for i, (symbol, interval, ts_ms, high, low, close, version) in enumerate(rows):
            key = (symbol, Interval(interval))
            s = self.series.get(key)
            if s is None:
                s = self.series[key] = Series()
            last_of_series = i + 1 == len(rows) or rows[i + 1][:2] != (symbol, interval)
            if last_of_series:  # only the latest candle can be corrected in place
                s.before_last = s.state.snapshot()
            s.state.update(high, low, close)
            s.last_ms, s.last_version = ts_ms, version
        return len(rows)

    async def start(self, ctx: Context) -> None:
        if ctx.store is not None:
            n = await self.warm_up()
            log.info("scoring state rebuilt from %d stored candles", n)
        self.ready.set()

    async def stop(self) -> None:
        return None
