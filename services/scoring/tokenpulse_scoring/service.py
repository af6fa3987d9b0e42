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
* Event ids of the outputs are deterministic (:func:`output_key`): scoring the same candle again
  after a redelivery or a restart re-publishes the same ids, so consumers and the store can count
  and deduplicate outputs by event id.
* A failed publish: the candles are in the state already, so their redelivery scores nothing new; the
  outputs are therefore kept, from the moment they are computed until the bus acknowledges them, and
  every handler call sends what is kept before it scores anything (:meth:`ScoringService._send_unsent`).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from tokenpulse_shared.batches import INDICATOR_NAMES, CandleBatch, IndicatorBatch
from tokenpulse_shared.bus import Bus, TransientError
from tokenpulse_shared.events import (
    CandleEvent,
    Direction,
    Event,
    GradeEvent,
    IndicatorEvent,
    Interval,
    MarketCapEvent,
    MetricsEvent,
    SignalEvent,
    trusted,
    utcnow,
)
from tokenpulse_shared.gctools import gc_paused
from tokenpulse_shared.service import ASGIApp, Context, StoreAccess
from tokenpulse_shared.timeutil import DAY_MS
from tokenpulse_shared.topics import (
    CANDLES,
    CANDLES_V2,
    GRADES,
    INDICATORS,
    INDICATORS_V2,
    MARKETCAPS,
    METRICS,
    SIGNALS,
    Topic,
)

from tokenpulse_scoring.forecast.live import Forecaster
from tokenpulse_scoring.forecast.registry import default_root
from tokenpulse_scoring.grades import METHOD, GradeResult, GradeState, IntradayState
from tokenpulse_scoring.indicators import IndicatorState

log = logging.getLogger(__name__)


Entry = tuple[int, float, float, float, float, float, int]  # ts_ms, open, high, low, close, volume, version
Signal = tuple[str, float, list[str]]  # direction, strength, reasons
HISTORY = 3000  # candles kept per series to recompute after a late correction
CHECKPOINT_EVERY = 250
SIGNAL_INTERVALS = (Interval.H1, Interval.H4, Interval.D1)
"""Intervals with signals: daily ones from the Trader Grade, 1h and 4h from the same components on
those candles (finer candles are too noisy to follow; see docs/methodology.md)."""


RETRACTED_REASON = "retracted: a late candle correction recomputed this history and the signal no longer holds"


_GRADE_SET = set(GradeEvent.model_fields)
PRICE_RANGE = (1e-150, 1e150)
"""Candles with every price inside this range give finite indicators by construction (no square or
ratio of them can overflow); outside it, each value is checked and a non-finite one becomes None."""


def output_key(symbol: str, interval: Interval, ts_ms: int, version: int, basis: tuple[int, int] | None) -> str:
    """What an output describes, as the deterministic part of its event id: the series, the candle's open
    time and version, and for a candle recomputed after a late correction of an earlier one, that
    correction (``-r<ts_ms>.<version>``): the same candle scored again (a redelivery, a restart) gives
    the same id; a legitimately new output (a new version, new values after a correction) a new one.

    Event ids are ``ind-``, ``grade-`` and ``sig-`` + this key (``-retracted`` for a retraction).
    :meth:`ScoringService._process` inlines it (one f-string per candle, the hot path)."""
    suffix = "" if basis is None else f"-r{basis[0]}.{basis[1]}"
    return f"{symbol}-{interval.value}-{ts_ms}-{version}{suffix}"


class Outputs(NamedTuple):
    """What scoring a batch of candles publishes: indicators as rows, grades and signals as events."""

    indicators: IndicatorBatch | None
    grades: list[GradeEvent]
    signals: list[SignalEvent]


@dataclass(frozen=True, slots=True)
class Send:
    """One publish of scored outputs: indicator rows, their v1 copies (``copy``) or events of a topic."""

    topic: Topic
    payload: IndicatorBatch | Sequence[Event]
    copy: bool = False

    def on(self, bus: Bus) -> Awaitable[None]:
        if isinstance(self.payload, IndicatorBatch):
            return bus.publish_rows(self.topic, self.payload, linger=False)
        if self.copy:
            return bus.publish_v1_copy(self.topic, self.payload)
        return bus.publish(self.topic, self.payload)


@dataclass
class Series:
    state: IndicatorState = field(default_factory=IndicatorState)
    grades: GradeState | None = None
    intraday: IntradayState | None = None
    last_ms: int = -1
    last_version: int = -1
    history: list[Entry] = field(default_factory=list)
    checkpoints: list[tuple[int, Any]] = field(default_factory=list)  # (ts_ms of the last candle in, state)
    signals: dict[int, tuple[str, float]] = field(default_factory=dict)  # published, within the kept history

    def snapshot(self) -> Any:
        return (
            self.state.snapshot(),
            self.grades.snapshot() if self.grades else None,
            self.intraday.snapshot() if self.intraday else None,
        )

    def restore(self, snap: Any) -> None:
        self.state.restore(snap[0])
        if self.grades is not None:
            self.grades.restore(snap[1])
        if self.intraday is not None:
            self.intraday.restore(snap[2])


@dataclass(slots=True)
class Update:
    indicators: dict[str, float | None]
    grade: GradeResult | None
    signal: Signal | None = None
    retracted: tuple[str, float] | None = None
    """a signal published earlier at this candle that a recomputation no longer produces: (direction, strength)"""
    basis: tuple[int, int] | None = field(default=None, compare=False)
    """(ts_ms, version) of the late correction whose recomputation produced this update of a later candle
    (it names the update's event ids; equal updates are equal whatever produced them)"""


class ScoringService:
    name = "scoring"
    store_access = StoreAccess.WARM_UP  # rebuilds its state from stored candles when a server is configured

    def __init__(self) -> None:
        self.ctx: Context | None = None
        self.series: dict[tuple[str, Interval], Series] = {}
        self.caps: dict[str, tuple[list[int], list[float]]] = {}
        self.btc_ret30: dict[int, float] = {}
        self.metrics: dict[str, tuple[list[int], list[dict[str, float]]]] = {}
        self.stale_corrections = 0
        self.ready = asyncio.Event()
        self._lock = asyncio.Lock()
        # outputs scored and not yet acknowledged by the bus, oldest first: appended by the scoring thread
        # right after it applied their candles (a deque: its appends and pops are atomic across threads)
        self._unsent: deque[Send] = deque()
        self._sending = asyncio.Lock()
        self.forecaster: Forecaster | None = None

    def http_app(self) -> ASGIApp | None:
        return None

    def register(self, ctx: Context) -> None:
        self.ctx = ctx
        if ctx.settings.scoring.predictions:
            self.forecaster = Forecaster(
                self.daily_bars,
                self.daily_symbols,
                default_root(ctx.settings.store.data_dir),
                ctx.settings.scoring.predictions_retrain_hours,
            )
        ctx.bus.subscribe(CANDLES, self.name, self.on_candles, max_batch=5000)
        ctx.bus.subscribe(CANDLES_V2, self.name, self.on_candle_rows, max_batch=5000)
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
        caps = self.caps.get(symbol)
        if caps is None:
            return None
        days, values = caps
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
        known = self.metrics.get(symbol)
        if known is None:
            return None
        days, values = known
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

    def _series(self, symbol: str, interval: Interval) -> Series:
        key = (symbol, interval)
        s = self.series.get(key)
        if s is None:
            s = self.series[key] = Series(
                grades=GradeState() if interval is Interval.D1 else None,
                intraday=IntradayState() if interval in SIGNAL_INTERVALS and interval is not Interval.D1 else None,
            )
            s.checkpoints.append((-1, s.snapshot()))  # the empty state: a young series can be corrected too
        return s

    def apply_batch(self, symbol: str, interval: Interval, entries: list[Entry]) -> list[tuple[Entry, Update]]:
        """Feed closed candles of one series in arrival order; returns every (candle, update) produced.

        The hot path: candles newer than the latest go through one tight loop; anything else (a
        duplicate, a correction, a late candle) through :meth:`apply_all`."""
        s = self._series(symbol, interval)
        out: list[tuple[Entry, Update]] = []
        append = out.append
        history = s.history
        step = self._step
        for entry in entries:
            ts_ms = entry[0]
            if ts_ms > s.last_ms:
                update = step(s, symbol, interval, entry)
                history.append(entry)
                s.last_ms, s.last_version = ts_ms, entry[6]
                if len(history) % CHECKPOINT_EVERY == 0:
                    self._checkpoint(s, ts_ms)
                    history = s.history
                append((entry, update))
            else:
                out.extend(self.apply_all(symbol, interval, entry))
                history = s.history
        return out

    def _checkpoint(self, s: Series, ts_ms: int) -> None:
        s.checkpoints.append((ts_ms, s.snapshot()))
        if len(s.history) > HISTORY + CHECKPOINT_EVERY:
            del s.history[:CHECKPOINT_EVERY]
            first = s.history[0][0]
            s.checkpoints = [c for c in s.checkpoints if c[0] >= first]
            if s.signals:
                s.signals = {t: v for t, v in s.signals.items() if t >= first}

    def apply_all(self, symbol: str, interval: Interval, entry: Entry) -> list[tuple[Entry, Update]]:
        """Feed one closed candle; returns every (candle, update) it produced, oldest first.

        In order: one update. A correction (a higher version of a candle we have) or a late-arriving
        candle: that candle and every later one, recomputed from the nearest checkpoint before it, as
        long as it is within the kept history (``HISTORY`` candles); older ones are counted in
        ``stale_corrections``. A signal published earlier that the recomputation no longer produces
        comes back as ``Update.retracted`` on its candle.
        """
        s = self._series(symbol, interval)
        ts_ms = entry[0]
        if ts_ms > s.last_ms:
            update = self._step(s, symbol, interval, entry)
            s.history.append(entry)
            s.last_ms, s.last_version = ts_ms, entry[6]
            if len(s.history) % CHECKPOINT_EVERY == 0:
                self._checkpoint(s, ts_ms)
            return [(entry, update)]
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
            before = s.signals.pop(e[0], None) if e[0] >= ts_ms else None
            update = self._step(s, symbol, interval, e)
            if n % CHECKPOINT_EVERY == 0:
                s.checkpoints.append((e[0], s.snapshot()))
            if e[0] >= ts_ms:
                if before is not None and update.signal is None:
                    update.retracted = before
                if e[0] > ts_ms:
                    update.basis = (ts_ms, entry[6])
                out.append((e, update))
        s.last_ms, s.last_version = s.history[-1][0], s.history[-1][6]
        return out

    def _step(self, s: Series, symbol: str, interval: Interval, entry: Entry) -> Update:
        ts_ms, open_, high, low, close, volume, _ = entry
        values = s.state.update(high, low, close)
        grade = signal = None
        if s.grades is not None:
            grade = s.grades.update(
                open_,
                close,
                volume,
                values,
                None if symbol == "BTC" else self.btc_ret30.get(ts_ms),
                self.market_cap_at(symbol, ts_ms) if self.caps else None,
                self.fundamentals_at(symbol, ts_ms) if self.metrics else None,
            )
            if symbol == "BTC" and grade.ret_30d is not None:
                self.btc_ret30[ts_ms] = grade.ret_30d
            signal = grade.signal
        elif s.intraday is not None:
            signal = s.intraday.update(open_, close, volume, values, interval.value)
        if signal is not None:
            s.signals[ts_ms] = (signal[0], signal[1])
        return Update(values, grade, signal)

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
        """Candle events of ``tokenpulse.candles.v1`` (outside producers, older releases)."""
        assert self.ctx is not None
        await self.ready.wait()
        await self._send_earlier()
        # The arithmetic runs on a worker thread (one at a time): the GIL's switch interval then
        # lets the event loop answer API requests even while a replay floods scoring.
        async with self._lock:
            await asyncio.to_thread(self._score_and_keep, _closed_by_series, candles)
        await self._send_unsent()
        await self._forecast(c.symbol for c in candles if c.closed and c.interval == Interval.D1)

    async def on_candle_rows(self, batches: list[CandleBatch]) -> None:
        """Candle rows of ``tokenpulse.candles.v2``, scored column by column (:meth:`score_rows`)."""
        assert self.ctx is not None
        await self.ready.wait()
        await self._send_earlier()
        async with self._lock:  # on a worker thread, as in on_candles
            await asyncio.to_thread(self._score_and_keep, _closed_rows_by_series, batches)
        await self._send_unsent()
        await self._forecast(
            symbol
            for b in batches
            for symbol, interval, closed in zip(b.symbol, b.interval, b.closed, strict=True)
            if closed and interval is Interval.D1
        )

    def _score_and_keep(
        self, by_series: Callable[[Any], dict[tuple[str, Interval], list[Entry]]], candles: Any
    ) -> None:
        """Score candles (grouped per series by ``by_series``) and keep their outputs as unsent, in the same
        thread call: once candles are in the state, their outputs are kept until the bus has them."""
        with gc_paused():
            outputs = self._score(by_series(candles))
        self._unsent.extend(self._sends(outputs))

    def _sends(self, outputs: Outputs) -> list[Send]:
        """Indicators as rows (and their v1 copies while TOKENPULSE_PUBLISH_V1), grades and signals."""
        assert self.ctx is not None
        sends = []
        if outputs.indicators is not None:
            sends.append(Send(INDICATORS_V2, outputs.indicators))
            if self.ctx.settings.bus.publish_v1:
                sends.append(Send(INDICATORS, outputs.indicators.to_events(), copy=True))
        if outputs.grades:
            sends.append(Send(GRADES, outputs.grades))
        if outputs.signals:
            sends.append(Send(SIGNALS, outputs.signals))
        return sends

    async def _send_earlier(self) -> None:
        """What earlier calls left unsent goes out before anything new is scored (each token's outputs stay in
        order); while it fails, the batch in hand, not scored yet, is redelivered and never dead-lettered: the
        failure is not its own, and a dead-lettered candle would be missing from the state."""
        try:
            await self._send_unsent()
        except TransientError:
            raise
        except Exception as exc:
            raise TransientError(f"scoring outputs of an earlier batch not sent yet: {exc!r}") from exc

    async def _send_unsent(self) -> None:
        """Publish every kept output, all at once (each topic's wait for the broker's acknowledgement overlaps
        the others'), one call at a time: a call returns once what was kept when it started is acknowledged,
        by it or by the call it waited for. Every send is awaited; the failed ones are kept again, in front,
        and the first failure is raised as it is (a :class:`TransientError` stays one): the batch in hand is
        redelivered, and its redelivery sends them before it scores anything."""
        assert self.ctx is not None
        async with self._sending:
            sends = [self._unsent.popleft() for _ in range(len(self._unsent))]
            if not sends:
                return
            try:
                results = await asyncio.gather(*(send.on(self.ctx.bus) for send in sends), return_exceptions=True)
            except asyncio.CancelledError:  # which sends got through is unknown: all again (same event ids)
                self._unsent.extendleft(reversed(sends))
                raise
            failed = [(send, r) for send, r in zip(sends, results, strict=True) if isinstance(r, BaseException)]
            if failed:
                self._unsent.extendleft(reversed([send for send, _ in failed]))
                log.warning("%d scoring publishes failed (%r); kept to be sent again", len(failed), failed[0][1])
                raise failed[0][1]

    async def _forecast(self, daily_symbols: Iterable[str]) -> None:
        """Tell the forecaster which tokens' daily candles closed (their latest day kept)."""
        if self.forecaster is None:
            return
        latest = {symbol: self.series[(symbol, Interval.D1)].last_ms for symbol in daily_symbols}
        if latest:
            await self.forecaster.on_daily_closes(latest)

    def score_rows(self, batches: Sequence[CandleBatch]) -> Outputs:
        """Score candle rows (``tokenpulse.candles.v2``) column to column: the closed rows grouped per series,
        one :meth:`apply_batch` per series, the indicators built as the columns of one :class:`IndicatorBatch`
        (no per-candle event on the way in or out: those objects cost more than the arithmetic)."""
        with gc_paused():
            return self._score(_closed_rows_by_series(batches))

    def _process(self, candles: list[CandleEvent]) -> tuple[list[IndicatorEvent], list[GradeEvent], list[SignalEvent]]:
        """Score candle events (``tokenpulse.candles.v1``): :meth:`score_rows`' outputs, indicators as events."""
        with gc_paused():
            outputs = self._score(_closed_by_series(candles))
        indicators = outputs.indicators.to_events() if outputs.indicators is not None else []
        return indicators, outputs.grades, outputs.signals

    def _score(self, by_series: dict[tuple[str, Interval], list[Entry]]) -> Outputs:
        """One :meth:`apply_batch` per series (the bus keeps each symbol's order), then the outputs, built
        without re-validating values this code computed: every number is checked finite here, a non-finite one
        is published as ``None``; signals, rare, are validated as usual."""
        ids: list[str] = []
        symbols: list[str] = []
        intervals: list[Interval] = []
        times: list[int] = []
        versions: list[int] = []
        values: list[tuple[float | None, ...]] = []
        grades: list[GradeEvent] = []
        signals: list[SignalEvent] = []
        now = utcnow()
        from_ts, isfinite = datetime.fromtimestamp, math.isfinite
        lo_ok, hi_ok = PRICE_RANGE
        for (symbol, interval), entries in by_series.items():
            results = self.apply_batch(symbol, interval, entries)
            series_key = f"{symbol}-{interval.value}-"
            symbols += [symbol] * len(results)
            intervals += [interval] * len(results)
            for entry, update in results:
                basis = update.basis  # output_key(), inlined
                ids_key = (
                    f"{series_key}{entry[0]}-{entry[6]}"
                    if basis is None
                    else f"{series_key}{entry[0]}-{entry[6]}-r{basis[0]}.{basis[1]}"
                )
                ids.append("ind-" + ids_key)
                times.append(entry[0])
                versions.append(entry[6])
                row = update.indicators
                if not (lo_ok < entry[3] and entry[2] < hi_ok):
                    row = {k: v if v is None or isfinite(v) else None for k, v in row.items()}
                values.append(tuple(map(row.__getitem__, INDICATOR_NAMES)))
                g = update.grade
                if g is not None and g.trader_grade is None and g.investor_grade is None:
                    g = None  # nothing to grade yet
                if g is not None or update.signal is not None or update.retracted is not None:
                    ts = from_ts(entry[0] / 1000, UTC)
                    if g is not None:
                        grades.append(_grade_event(g, "grade-" + ids_key, symbol, ts, now))
                    if update.signal is not None or update.retracted is not None:
                        signals.append(_signal_event(update, ids_key, symbol, interval, ts))
        if not ids:
            return Outputs(None, grades, signals)
        columns: list[list[Any]] = [ids, symbols, intervals, times, *map(list, zip(*values, strict=True)), versions]
        return Outputs(IndicatorBatch.of_columns(columns, produced_at=now), grades, signals)

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
        """Rows ordered by series and time: one :meth:`apply_batch` per series."""
        for (symbol, interval), group in itertools.groupby(rows, key=lambda r: (r[0], r[1])):
            self.apply_batch(symbol, Interval(interval), [tuple(r[2:]) for r in group])  # type: ignore[misc]

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
        logged = await bus.read_log(CANDLES, until_group=self.name)
        for batch in await bus.read_log(CANDLES_V2, until_group=self.name):
            logged += batch.to_events() if isinstance(batch, CandleBatch) else []
        for e in logged:
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
        if self._unsent:  # the bus still publishes here (the runtime stops consuming first)
            try:
                await self._send_unsent()
            except Exception:
                log.exception("scoring stops with %d publishes not acknowledged", len(self._unsent))
        if self.forecaster is not None:
            await self.forecaster.stop()


def _closed_rows_by_series(batches: Sequence[CandleBatch]) -> dict[tuple[str, Interval], list[Entry]]:
    """The closed rows of candle batches as entries per series, in row order (each batch is one partition's)."""
    by_series: dict[tuple[str, Interval], list[Entry]] = {}
    for b in batches:
        entries = zip(b.ts_ms, b.open, b.high, b.low, b.close, b.volume, b.version, strict=True)
        for symbol, interval, closed, entry in zip(b.symbol, b.interval, b.closed, entries, strict=True):
            if closed:
                group = by_series.get((symbol, interval))
                if group is None:
                    by_series[(symbol, interval)] = [entry]
                else:
                    group.append(entry)
    return by_series


def _closed_by_series(candles: list[CandleEvent]) -> dict[tuple[str, Interval], list[Entry]]:
    """The closed candles of a batch as entries per series, in arrival order (the bus keeps each symbol's)."""
    by_series: dict[tuple[str, Interval], list[Entry]] = {}
    for c in candles:
        if c.closed:
            entry = (int(c.ts.timestamp() * 1000), c.open, c.high, c.low, c.close, c.volume, c.version)
            key = (c.symbol, c.interval)
            group = by_series.get(key)
            if group is None:
                by_series[key] = [entry]
            else:
                group.append(entry)
    return by_series


def _grade_event(g: GradeResult, event_id: str, symbol: str, ts: datetime, now: datetime) -> GradeEvent:
    """A grade computed here, trusted: a non-finite number is published as ``None``."""
    isfinite = math.isfinite
    trader, investor = g.trader_grade, g.investor_grade
    return trusted(
        GradeEvent,
        {
            "event_id": event_id,
            "schema_version": 1,
            "produced_at": now,
            "symbol": symbol,
            "ts": ts,
            "trader_grade": trader if trader is None or isfinite(trader) else None,
            "investor_grade": investor if investor is None or isfinite(investor) else None,
            "components": {k: v if v is None or isfinite(v) else None for k, v in g.components.items()},
            "method": METHOD,
        },
        _GRADE_SET,
    )


def _signal_event(update: Update, ids_key: str, symbol: str, interval: Interval, ts: datetime) -> SignalEvent:
    """The update's signal, or the retraction of an earlier one (signals are rare: validated as usual)."""
    if update.signal is not None:
        direction, strength, reasons = update.signal
        return SignalEvent(
            event_id="sig-" + ids_key,
            symbol=symbol,
            ts=ts,
            interval=interval,
            direction=Direction(direction),
            strength=strength,
            reasons=reasons,
        )
    assert update.retracted is not None
    direction, strength = update.retracted
    return SignalEvent(
        event_id=f"sig-{ids_key}-retracted",
        symbol=symbol,
        ts=ts,
        interval=interval,
        direction=Direction(direction),
        strength=strength,
        reasons=[RETRACTED_REASON],
        retracted=True,
    )
