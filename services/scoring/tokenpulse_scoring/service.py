"""The scoring service: closed candles in; indicators, grades and signals out.

For every (symbol, interval) it keeps an :class:`IndicatorState` and publishes an
:class:`IndicatorEvent` per closed candle on ``tokenpulse.indicators.v1``. On daily candles
it also updates a :class:`GradeState` and publishes the Trader/Investor Grades
(``tokenpulse.grades.v1``) and, when the hysteresis state machine changes, a signal
(``tokenpulse.signals.v1``). Market caps (``tokenpulse.marketcaps.v1``) feed the Investor
Grade: the cap known on or before the candle's day is used.

* Order and duplicates: the same candle again with no higher version changes nothing. A
  correction of the latest candle undoes and recomputes it; a correction of an older candle
  (or a missing one arriving late) recomputes it and everything after it from the nearest
  checkpoint, within the last ``HISTORY`` candles; older ones are counted in
  ``stale_corrections``.
* Restart: when the process has the store (embedded mode, or ``TOKENPULSE_CLICKHOUSE_URL``
  pointing at a server), it first replays the stored market caps and candles through the
  same code path without publishing, so a restarted instance continues with exactly the
  state it would have had; handlers wait for that.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tokenpulse_shared.events import (
    CandleEvent,
    Direction,
    GradeEvent,
    IndicatorEvent,
    Interval,
    MarketCapEvent,
    MetricsEvent,
    SignalEvent,
)
from tokenpulse_shared.service import Context
from tokenpulse_shared.topics import CANDLES, GRADES, INDICATORS, MARKETCAPS, METRICS, SIGNALS

from tokenpulse_scoring.forecast.live import Forecaster
from tokenpulse_scoring.forecast.registry import default_root
from tokenpulse_scoring.grades import METHOD, GradeResult, GradeState
from tokenpulse_scoring.indicators import IndicatorState

log = logging.getLogger(__name__)
DAY_MS = 86_400_000


Entry = tuple[int, float, float, float, float, float, int]  # ts_ms, open, high, low, close, volume, version
HISTORY = 3000  # candles kept per series to recompute after a late correction
CHECKPOINT_EVERY = 250


@dataclass
class Series:
    state: IndicatorState = field(default_factory=IndicatorState)
    grades: GradeState | None = None
    last_ms: int = -1
    last_version: int = -1
    before_last: Any = None
    history: list[Entry] = field(default_factory=list)
    checkpoints: list[tuple[int, Any]] = field(default_factory=list)  # (ts_ms of the last candle in, state)

    def snapshot(self) -> Any:
        return self.state.snapshot(), self.grades.snapshot() if self.grades else None

    def restore(self, snap: Any) -> None:
        self.state.restore(snap[0])
        if self.grades is not None:
            self.grades.restore(snap[1])


@dataclass
class Update:
    indicators: dict[str, float | None]
    grade: GradeResult | None


class ScoringService:
    name = "scoring"

    def __init__(self) -> None:
        self.ctx: Context | None = None
        self.series: dict[tuple[str, Interval], Series] = {}
        self.caps: dict[str, tuple[list[int], list[float]]] = {}
        self.btc_ret30: dict[int, float] = {}
        self.metrics: dict[str, tuple[list[int], list[dict[str, float]]]] = {}
        self.stale_corrections = 0
        self.ready = asyncio.Event()
        self._lock = asyncio.Lock()
        self.forecaster: Forecaster | None = None

    def register(self, ctx: Context) -> None:
        self.ctx = ctx
        if ctx.settings.predictions:
            self.forecaster = Forecaster(
                self.daily_bars,
                self.daily_symbols,
                default_root(ctx.settings.data_dir),
                ctx.settings.predictions_retrain_hours,
            )
        ctx.bus.subscribe(CANDLES, self.name, self.on_candles, max_batch=5000)
        ctx.bus.subscribe(MARKETCAPS, self.name, self.on_marketcaps, max_batch=5000)
        ctx.bus.subscribe(METRICS, self.name, self.on_metrics, max_batch=5000)

    # --- state -----------------------------------------------------------------------------

    def add_market_cap(self, symbol: str, ts_ms: int, cap: float) -> None:
        days, values = self.caps.setdefault(symbol, ([], []))
        i = bisect.bisect_left(days, ts_ms)
        if i < len(days) and days[i] == ts_ms:
            values[i] = cap
        else:
            days.insert(i, ts_ms)
            values.insert(i, cap)

    def market_cap_at(self, symbol: str, ts_ms: int) -> float | None:
        days, values = self.caps.get(symbol, ([], []))
        i = bisect.bisect_right(days, ts_ms + DAY_MS - 1) - 1  # a snapshot taken during the candle's day
        return values[i] if i >= 0 and ts_ms - days[i] <= 7 * DAY_MS else None

    def add_metrics(self, symbol: str, ts_ms: int, metrics: dict[str, float]) -> None:
        days, values = self.metrics.setdefault(symbol, ([], []))
        i = bisect.bisect_left(days, ts_ms)
        if i < len(days) and days[i] == ts_ms:
            values[i] = {**values[i], **metrics}
        else:
            days.insert(i, ts_ms)
            values.insert(i, dict(metrics))

    def fundamentals_at(self, symbol: str, ts_ms: int) -> dict[str, float] | None:
        """Point in time: the latest value of each metric known on the day (at most 30 days old), and
        the ETF flows of the 30 days up to it."""
        days, values = self.metrics.get(symbol, ([], []))
        hi = bisect.bisect_right(days, ts_ms)
        lo = bisect.bisect_left(days, ts_ms - 30 * DAY_MS)
        if hi == lo:
            return None
        latest: dict[str, float] = {}
        flows = 0.0
        for i in range(lo, hi):
            latest.update({k: v for k, v in values[i].items() if k != "etf_net_flow_usd"})
            flows += values[i].get("etf_net_flow_usd", 0.0)
        if any("etf_net_flow_usd" in values[i] for i in range(lo, hi)):
            latest["etf_net_flow_30d_usd"] = flows
        return latest

    def daily_bars(self, symbol: str) -> list[tuple[int, float, float, float, float]]:
        """The kept daily candles of a token as (ts_ms, high, low, close, volume), oldest first."""
        s = self.series.get((symbol, Interval.D1))
        return [(e[0], e[2], e[3], e[4], e[5]) for e in s.history] if s else []

    def daily_symbols(self) -> list[str]:
        return sorted(sym for sym, interval in self.series if interval is Interval.D1)

    def btc_return_at(self, ts_ms: int) -> float | None:
        return self.btc_ret30.get(ts_ms)

    def apply(
        self,
        symbol: str,
        interval: Interval,
        ts_ms: int,
        open_: float,
        high: float,
        low: float,
        close: float,
        volume: float,
        version: int,
    ) -> Update | None:
        """Feed one closed candle; returns its own update, or None when it changes nothing."""
        out = self.apply_all(symbol, interval, (ts_ms, open_, high, low, close, volume, version))
        return next((u for e, u in out if e[0] == ts_ms), None)

    def apply_all(self, symbol: str, interval: Interval, entry: Entry) -> list[tuple[Entry, Update]]:
        """Feed one closed candle; returns every (candle, update) it produced, oldest first.

        In order: one update. A correction of the latest candle: it, recomputed. A correction (or a
        late-arriving candle) older than the latest: that candle and every later one, recomputed from
        the nearest checkpoint before it, as long as it is within the kept history (``HISTORY``
        candles); older ones are counted in ``stale_corrections``.
        """
        key = (symbol, interval)
        s = self.series.get(key)
        if s is None:
            s = self.series[key] = Series(grades=GradeState() if interval is Interval.D1 else None)
        ts_ms, version = entry[0], entry[6]
        if ts_ms > s.last_ms:
            s.before_last = s.snapshot()
            update = self._step(s, symbol, entry)
            s.history.append(entry)
            if len(s.history) % CHECKPOINT_EVERY == 0:
                s.checkpoints.append((ts_ms, s.snapshot()))
            if len(s.history) > HISTORY + CHECKPOINT_EVERY:
                del s.history[:CHECKPOINT_EVERY]
                first = s.history[0][0]
                s.checkpoints = [c for c in s.checkpoints if c[0] >= first]
            s.last_ms, s.last_version = ts_ms, version
            return [(entry, update)]
        if ts_ms == s.last_ms:
            if version <= s.last_version:
                return []
            s.restore(s.before_last)  # a correction of the latest candle: undo it, then redo
            s.history[-1] = entry
            s.last_version = version
            return [(entry, self._step(s, symbol, entry))]
        return self._recompute(s, symbol, interval, entry)

    def _recompute(self, s: Series, symbol: str, interval: Interval, entry: Entry) -> list[tuple[Entry, Update]]:
        ts_ms = entry[0]
        i = bisect.bisect_left(s.history, (ts_ms,))
        exists = i < len(s.history) and s.history[i][0] == ts_ms
        if exists and entry[6] <= s.history[i][6]:
            return []  # a duplicate, or an older version of a candle we have
        checkpoint = next((c for c in reversed(s.checkpoints) if c[0] < ts_ms), None)
        if checkpoint is None:
            self.stale_corrections += 1
            log.info(
                "correction of an older %s %s candle at %d is beyond the kept history", symbol, interval.value, ts_ms
            )
            return []
        if exists:
            s.history[i] = entry
        else:
            s.history.insert(i, entry)
        s.restore(checkpoint[1])
        start = bisect.bisect_right(s.history, (checkpoint[0], float("inf")))
        s.checkpoints = [c for c in s.checkpoints if c[0] <= checkpoint[0]]
        out = []
        for n, e in enumerate(s.history[start:], start + 1):
            if n == len(s.history):
                s.before_last = s.snapshot()
            update = self._step(s, symbol, e)
            if n % CHECKPOINT_EVERY == 0:
                s.checkpoints.append((e[0], s.snapshot()))
            if e[0] >= ts_ms:
                out.append((e, update))
        s.last_ms, s.last_version = s.history[-1][0], s.history[-1][6]
        return out

    def _step(self, s: Series, symbol: str, entry: Entry) -> Update:
        ts_ms, open_, high, low, close, volume, _ = entry
        values = s.state.update(high, low, close)
        grade = None
        if s.grades is not None:
            grade = s.grades.update(
                open_,
                close,
                volume,
                values,
                None if symbol == "BTC" else self.btc_return_at(ts_ms),
                self.market_cap_at(symbol, ts_ms),
                self.fundamentals_at(symbol, ts_ms),
            )
            if symbol == "BTC" and grade.ret_30d is not None:
                self.btc_ret30[ts_ms] = grade.ret_30d
        return Update(values, grade)

    # --- handlers ----------------------------------------------------------------------------

    async def on_marketcaps(self, events: list[MarketCapEvent]) -> None:
        await self.ready.wait()
        for e in events:
            if e.symbol:
                self.add_market_cap(e.symbol, int(e.ts.timestamp() * 1000), e.market_cap)

    async def on_metrics(self, events: list[MetricsEvent]) -> None:
        await self.ready.wait()
        for e in events:
            self.add_metrics(e.symbol, int(e.ts.timestamp() * 1000), e.metrics)

    async def on_candles(self, candles: list[CandleEvent]) -> None:
        assert self.ctx is not None
        await self.ready.wait()
        # The arithmetic runs on a worker thread (one at a time): the GIL's switch interval then
        # lets the event loop answer API requests even while a replay floods scoring.
        async with self._lock:
            indicators, grades, signals = await asyncio.to_thread(self._process, candles)
        if indicators:
            await self.ctx.bus.publish(INDICATORS, indicators)
        if grades:
            await self.ctx.bus.publish(GRADES, grades)
        if signals:
            await self.ctx.bus.publish(SIGNALS, signals)
        if self.forecaster is not None:
            latest = {
                c.symbol: self.series[(c.symbol, Interval.D1)].last_ms
                for c in candles
                if c.closed and c.interval == Interval.D1
            }
            if latest:
                await self.forecaster.on_daily_closes(latest)

    def _process(self, candles: list[CandleEvent]) -> tuple[list[IndicatorEvent], list[GradeEvent], list[SignalEvent]]:
        indicators: list[IndicatorEvent] = []
        grades: list[GradeEvent] = []
        signals: list[SignalEvent] = []
        for c in candles:
            if not c.closed:
                continue
            entry = (int(c.ts.timestamp() * 1000), c.open, c.high, c.low, c.close, c.volume, c.version)
            for (ts_ms, *_, version), update in self.apply_all(c.symbol, c.interval, entry):
                ts = datetime.fromtimestamp(ts_ms / 1000, UTC)
                indicators.append(
                    IndicatorEvent(
                        symbol=c.symbol, interval=c.interval, ts=ts, candle_version=version, **update.indicators
                    )
                )
                g = update.grade
                if g is None or (g.trader_grade is None and g.investor_grade is None):
                    continue
                grades.append(
                    GradeEvent(
                        symbol=c.symbol,
                        ts=ts,
                        trader_grade=g.trader_grade,
                        investor_grade=g.investor_grade,
                        components=g.components,
                        method=METHOD,
                    )
                )
                if g.signal is not None:
                    direction, strength, reasons = g.signal
                    signals.append(
                        SignalEvent(
                            symbol=c.symbol,
                            ts=ts,
                            interval=Interval.D1,
                            direction=Direction(direction),
                            strength=strength,
                            reasons=reasons,
                        )
                    )
        return indicators, grades, signals

    # --- lifecycle ---------------------------------------------------------------------------

    async def warm_up(self) -> int:
        """Replay stored market caps and candles through :meth:`apply` (nothing is published)."""
        assert self.ctx is not None and self.ctx.store is not None
        for symbol, ts_ms, cap in await self.ctx.store.query(
            "SELECT symbol, toUnixTimestamp64Milli(ts), market_cap FROM market_caps FINAL WHERE symbol != ''"
        ):
            self.add_market_cap(symbol, ts_ms, cap)
        for symbol, ts_ms, raw in await self.ctx.store.query(
            "SELECT symbol, toUnixTimestamp64Milli(ts), metrics FROM metrics FINAL ORDER BY ts"
        ):
            self.add_metrics(symbol, ts_ms, json.loads(raw))
        # BTC first, as in a replay, so other tokens' strength vs BTC sees BTC's returns
        rows = await self.ctx.store.query(
            "SELECT symbol, interval, toUnixTimestamp64Milli(ts), open, high, low, close, volume, version "
            "FROM candles FINAL ORDER BY symbol != 'BTC', symbol, interval, ts"
        )
        # off the event loop: the API stays responsive; handlers wait for `ready` meanwhile
        await asyncio.to_thread(self._replay, rows)
        return len(rows)

    def _replay(self, rows: list[tuple[Any, ...]]) -> None:
        for symbol, interval, ts_ms, o, h, lo, c, v, version in rows:
            self.apply(symbol, Interval(interval), ts_ms, o, h, lo, c, v, version)

    async def rebuild_from_topics(self) -> int:
        """Without a store (distributed mode on chDB): the same warm-up from the topics, each read up to what
        this service's consumer group has committed, so the state is the one a killed process had reached
        and what is consumed next (redelivered or new) continues from it."""
        assert self.ctx is not None
        bus = self.ctx.bus
        for e in await bus.read_log(MARKETCAPS, until_group=self.name):
            if isinstance(e, MarketCapEvent) and e.symbol:
                self.add_market_cap(e.symbol, int(e.ts.timestamp() * 1000), e.market_cap)
        metrics = [e for e in await bus.read_log(METRICS, until_group=self.name) if isinstance(e, MetricsEvent)]
        for e in sorted(metrics, key=lambda m: m.ts):
            self.add_metrics(e.symbol, int(e.ts.timestamp() * 1000), e.metrics)
        latest: dict[tuple[str, str, int], CandleEvent] = {}  # the highest version of each candle, as FINAL keeps
        for e in await bus.read_log(CANDLES, until_group=self.name):
            if isinstance(e, CandleEvent) and e.closed:
                k = (e.symbol, e.interval.value, int(e.ts.timestamp() * 1000))
                if k not in latest or e.version >= latest[k].version:
                    latest[k] = e
        rows = [
            (c.symbol, c.interval.value, k[2], c.open, c.high, c.low, c.close, c.volume, c.version)
            for k, c in sorted(latest.items(), key=lambda kv: (kv[0][0] != "BTC", kv[0]))
        ]
        await asyncio.to_thread(self._replay, rows)
        return len(rows)

    async def start(self, ctx: Context) -> None:
        if ctx.store is not None:
            n = await self.warm_up()
            log.info("scoring state rebuilt from %d stored candles", n)
        elif not ctx.embedded:
            n = await self.rebuild_from_topics()
            log.info("scoring state rebuilt from %d candles on the topic (up to the committed offsets)", n)
        self.ready.set()
        if self.forecaster is not None:
            await self.forecaster.start(ctx)

    async def stop(self) -> None:
        if self.forecaster is not None:
            await self.forecaster.stop()
