"""Building OHLCV candles from ticks, correct under duplicate and out-of-order input.

One :class:`CandleBuilder` per ingest instance; ticks of a symbol always reach
the same instance (the bus is keyed by symbol). For every interval a tick
lands in its bucket; a tick already seen (same exchange trade id, or same
event id) is ignored, so a redelivered tick never doubles a volume. A bucket
is emitted when it closes: when the symbol's event-time watermark passes the
bucket end plus ``lateness``, or when the symbol has been quiet for
``idle_close_s`` seconds of wall time and the bucket has ended. A tick that
arrives for a bucket already emitted, within ``retention`` after its end,
re-emits the corrected candle with a higher ``version`` (the store keeps the
highest); a tick later than that is returned as too late (dead letter).

Live and synthetic trades are never mixed in one candle (``auto`` mode switching back from
its synthetic fallback, or a synthetic batch still in flight on the bus after the switch):
a live tick for a bucket that holds only synthetic ticks and is still open *discards* them
and starts the bucket afresh from the live trade (the synthetic part of that period is never
published; that candle covers the live trades only); for a bucket already emitted as
synthetic it leaves that final candle alone (the tick still counts in the longer intervals'
buckets). A synthetic tick for a bucket that holds live trades is dropped
(``BuildResult.superseded``).

After a restart :meth:`CandleBuilder.restore` rebuilds this state from the ticks already counted and
the candles already published (see the ingest service); with several ingest replicas each holds the
symbols of its ticks partitions: a partition taken over is restored into an :meth:`~CandleBuilder.empty_like`
builder and :meth:`~CandleBuilder.adopt`-ed, one given away is :meth:`~CandleBuilder.drop`-ped.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tokenpulse_shared.batches import TickBatch, chunked, epoch_us
from tokenpulse_shared.checkpoints import CheckpointCandle, CheckpointFloor, CheckpointSymbol, CheckpointTradeIds
from tokenpulse_shared.events import CandleEvent, Interval, TickEvent, content_digest

from tokenpulse_ingest.synthetic import SYNTHETIC

ALL_INTERVALS = tuple(Interval)
_NEVER = 2**62  # a due time no watermark or clock reaches


@dataclass
class _Acc:
    symbol: str
    interval: Interval
    start_ms: int
    open_ts: int
    close_ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0
    trades: int = 0
    emitted: bool = False
    version: int = 0
    synthetic: bool = False  # made of synthetic ticks (never mixed with live ones)
    # after a restore: the trades of its latest published candle, which may count ticks a redelivered batch
    # brings again; corrections wait until they are passed (a smaller candle would go out as a newer one)
    published_trades: int = -1

    def add(self, ts_ms: int, price: float, size: float) -> None:
        if ts_ms < self.open_ts:
            self.open_ts, self.open = ts_ms, price
        if ts_ms >= self.close_ts:
            self.close_ts, self.close = ts_ms, price
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.volume += size
        self.trades += 1

    def to_event(self, source: str) -> CandleEvent:
        self.version += 1
        version = self.trades * 1000 + min(self.version, 999)
        # deterministic: the same candle built again (ticks redelivered after a restart) is the same event
        fields = (self.open, self.high, self.low, self.close, self.volume, self.trades, source)
        return CandleEvent(
            event_id=f"candle-{self.symbol}-{self.interval.value}-{self.start_ms}-{version}-{content_digest(*fields)}",
            symbol=self.symbol,
            interval=self.interval,
            ts=datetime.fromtimestamp(self.start_ms / 1000, UTC),
            open=self.open,
            high=self.high,
            low=self.low,
            close=self.close,
            volume=self.volume,
            trades=self.trades,
            source=source,
            version=version,
        )


@dataclass
class BuilderState:
    """What a checkpoint holds of a builder's symbols (:meth:`CandleBuilder.export`)."""

    symbols: list[CheckpointSymbol] = field(default_factory=list)
    candles: list[CheckpointCandle] = field(default_factory=list)
    floors: list[CheckpointFloor] = field(default_factory=list)
    trade_ids: list[CheckpointTradeIds] = field(default_factory=list)


_ACC_FIELDS = tuple(f for f in CheckpointCandle.model_fields if f not in ("symbol", "interval", "start_ms"))


@dataclass
class RestoreResult:
    ticks: int = 0
    buckets: int = 0
    emitted: int = 0
    from_candles: int = 0
    dropped: int = 0
    after_checkpoint: int = 0  # of ``ticks``: those replayed after a partition's checkpoint

    def __add__(self, other: RestoreResult) -> RestoreResult:
        return RestoreResult(*(a + b for a, b in zip(vars(self).values(), vars(other).values(), strict=True)))


@dataclass
class BuildResult:
    candles: list[CandleEvent] = field(default_factory=list)
    late: list[TickEvent] = field(default_factory=list)  # by :meth:`CandleBuilder.add`: the late events
    late_rows: list[int] = field(default_factory=list)  # the late trades' indexes in the input
    duplicates: int = 0
    superseded: int = 0  # synthetic ticks dropped (live trades hold their bucket), and vice versa per interval


class CandleBuilder:
    def __init__(
        self,
        intervals: Iterable[Interval] = ALL_INTERVALS,
        *,
        lateness_ms: int = 2_000,
        idle_close_s: float = 5.0,
        source: str = "ticks",
    ) -> None:
        self.intervals = tuple(intervals)
        self.lateness_ms = lateness_ms
        self.idle_close_s = idle_close_s
        self.source = source
        # open buckets per token, then per (interval, open time): a batch looks only at its tokens' buckets
        self._buckets: dict[str, dict[tuple[Interval, int], _Acc]] = {}
        self._watermark: dict[str, int] = {}
        self._last_seen_wall: dict[str, float] = {}
        # the trades counted per token and bucket of the finest interval: a trade too old for that bucket is late
        # in every interval, so the duplicates of the coarser buckets are found there too
        self._finest = min(self.intervals, key=lambda interval: interval.millis)
        self._counted: dict[str, dict[int, set[str]]] = {}
        # after a restore: version counters of published candles whose bucket is not held (yet); a bucket
        # created again for one of them (a redelivered batch) continues from it
        self._version_floor: dict[tuple[str, Interval, int], tuple[int, int]] = {}
        # the close index: per token, its buckets dict and the watermark and wall time (ms, once idle) before
        # which none of its buckets can close or be forgotten, so a close looks only at tokens with one due
        self._due: dict[str, tuple[dict[tuple[Interval, int], _Acc], int, int]] = {}

    def empty_like(self) -> CandleBuilder:
        """A builder with this one's parameters and no state (to restore a partition's symbols into)."""
        return CandleBuilder(
            self.intervals, lateness_ms=self.lateness_ms, idle_close_s=self.idle_close_s, source=self.source
        )

    def symbols(self) -> set[str]:
        """The symbols this builder holds state of."""
        return set(self._watermark) | set(self._buckets) | {key[0] for key in self._version_floor}

    def drop(self, symbols: set[str]) -> None:
        """Forget every state of ``symbols`` (their partition went to another replica)."""
        if not symbols:
            return
        for key in [k for k in self._version_floor if k[0] in symbols]:
            del self._version_floor[key]
        for symbol in symbols:
            self._buckets.pop(symbol, None)
            self._due.pop(symbol, None)
            self._counted.pop(symbol, None)
            self._watermark.pop(symbol, None)
            self._last_seen_wall.pop(symbol, None)

    def touch_all(self, wall: float | None = None) -> None:
        """Count every symbol held as seen now: after a pause in the handling (a rebalance), which says
        nothing about the symbols' trading, the idle close waits its full ``idle_close_s`` again."""
        wall = time.time() if wall is None else wall
        for symbol in self._last_seen_wall:
            self._last_seen_wall[symbol] = wall

    def adopt(self, other: CandleBuilder) -> None:
        """Take over ``other``'s state (symbols this builder does not hold: a partition restored apart)."""
        self._buckets.update(other._buckets)
        self._counted.update(other._counted)
        self._watermark.update(other._watermark)
        self._last_seen_wall.update(other._last_seen_wall)
        self._version_floor.update(other._version_floor)

    def export(self, symbols: Iterable[str]) -> BuilderState:
        """A copy of every state of ``symbols`` (a checkpoint of their partition): it shares nothing with this
        builder, which may go on meanwhile."""
        out = BuilderState()
        wanted = set(symbols)
        for symbol in sorted(wanted & set(self._watermark)):
            seen = self._last_seen_wall.get(symbol, 0.0)
            out.symbols.append(CheckpointSymbol(symbol=symbol, watermark=self._watermark[symbol], last_seen_wall=seen))
        for symbol in sorted(wanted & set(self._buckets)):
            for (interval, start), acc in self._buckets[symbol].items():
                fields = {name: getattr(acc, name) for name in _ACC_FIELDS}
                out.candles.append(CheckpointCandle(symbol=symbol, interval=interval, start_ms=start, **fields))
        for (symbol, interval, start), (version, trades) in self._version_floor.items():
            if symbol in wanted:
                out.floors.append(
                    CheckpointFloor(symbol=symbol, interval=interval, start_ms=start, version=version, trades=trades)
                )
        for symbol in sorted(wanted & set(self._counted)):
            for start, keys in self._counted[symbol].items():
                out.trade_ids.append(CheckpointTradeIds(symbol=symbol, start_ms=start, keys=list(keys)))
        return out

    def load(self, state: BuilderState) -> None:
        """Take the state :meth:`export` made (into a builder that holds none of its symbols)."""
        for s in state.symbols:
            self._watermark[s.symbol] = s.watermark
            self._last_seen_wall[s.symbol] = s.last_seen_wall
        for c in state.candles:
            fields = {name: getattr(c, name) for name in _ACC_FIELDS}
            self._buckets.setdefault(c.symbol, {})[(c.interval, c.start_ms)] = _Acc(
                c.symbol, c.interval, c.start_ms, **fields
            )
        for f in state.floors:
            self._version_floor[(f.symbol, f.interval, f.start_ms)] = (f.version, f.trades)
        for t in state.trade_ids:
            self._counted.setdefault(t.symbol, {}).setdefault(t.start_ms, set()).update(t.keys)

    def retention_ms(self, interval: Interval) -> int:
        return max(interval.millis, 60_000) + self.lateness_ms

    def add(self, ticks: Iterable[TickEvent], wall: float | None = None) -> BuildResult:
        """:meth:`add_rows` for per-trade events (``tokenpulse.ticks.v1``, the store's ticks at a restore)."""
        ticks = list(ticks)
        result = self.add_rows(
            [t.symbol for t in ticks],
            [t.source for t in ticks],
            [epoch_us(t.ts) for t in ticks],
            [t.price for t in ticks],
            [t.size for t in ticks],
            [t.dedup_key() for t in ticks],
            wall,
        )
        result.late = [ticks[i] for i in result.late_rows]
        return result

    def add_batch(self, batch: TickBatch, wall: float | None = None) -> BuildResult:
        """:meth:`add_rows` for the rows of a ``tokenpulse.ticks.v2`` batch (``late_rows`` index them)."""
        b = batch
        return self.add_rows(b.symbol, b.source, b.ts_us, b.price, b.size, b.dedup_keys(), wall)

    def add_rows(
        self,
        symbols: Sequence[str],
        sources: Sequence[str],
        ts_us: Sequence[int],
        prices: Sequence[float],
        sizes: Sequence[float],
        keys: Sequence[str],
        wall: float | None = None,
    ) -> BuildResult:
        """Trades given column by column (``keys``: each one's identity); the rows too late for their candles
        are returned by index in ``late_rows``."""
        wall = time.time() if wall is None else wall
        result = BuildResult()
        touched: set[str] = set()
        rows = zip(symbols, sources, ts_us, prices, sizes, keys, strict=True)
        for i, (symbol, source, t_us, price, size, key) in enumerate(rows):
            buckets = self._buckets.get(symbol)
            if buckets is None:
                buckets = self._buckets[symbol] = {}
            ts_ms = t_us // 1000
            watermark = self._watermark.get(symbol, ts_ms)
            corrections = self._place(symbol, buckets, ts_ms, price, size, key, source == SYNTHETIC, watermark, result)
            if corrections is None:
                result.late_rows.append(i)
                continue
            result.candles.extend(acc.to_event(self.source) for acc in corrections)
            self._watermark[symbol] = max(watermark, ts_ms)
            self._last_seen_wall[symbol] = wall
            touched.add(symbol)
        result.candles.extend(self._close(touched, wall))
        return result

    def _place(
        self,
        symbol: str,
        buckets: dict[tuple[Interval, int], _Acc],
        ts_ms: int,
        price: float,
        size: float,
        key: str,
        synthetic: bool,
        watermark: int,
        result: BuildResult,
    ) -> list[_Acc] | None:
        """One trade into its bucket of every interval; the emitted buckets it corrects, or None: too late."""
        counted = self._counted_in(symbol, ts_ms)
        if key in counted:
            result.duplicates += 1
            return []
        counted.add(key)
        corrections = []
        for interval in self.intervals:
            start = interval.bucket_ms(ts_ms)
            acc = buckets.get((interval, start))
            if acc is not None and acc.synthetic != synthetic:
                if synthetic or acc.emitted:  # never mixed: see the module docstring
                    if interval is self.intervals[0]:
                        result.superseded += 1
                    continue
                acc = None  # live trades supersede the open synthetic candle: start it afresh
            if acc is None:
                if start + interval.millis + self.retention_ms(interval) <= watermark:
                    return None
                self._due.pop(symbol, None)  # a new bucket may be due sooner than the token's others
                acc = _Acc(symbol, interval, start, ts_ms, ts_ms, price, price, price, price)
                acc.synthetic = synthetic
                buckets[(interval, start)] = acc
                acc.trades = 0
                if self._version_floor and (floor := self._version_floor.pop((symbol, interval, start), None)):
                    acc.version, acc.published_trades = floor
                    acc.emitted = True
            acc.add(ts_ms, price, size)
            if acc.emitted and acc.trades > acc.published_trades:
                corrections.append(acc)
        return corrections

    def _counted_in(self, symbol: str, ts_ms: int) -> set[str]:
        """The trades counted in the finest interval's bucket of ``ts_ms``."""
        window = self._counted.get(symbol)
        if window is None:
            window = self._counted[symbol] = {}
        start = self._finest.bucket_ms(ts_ms)
        counted = window.get(start)
        if counted is None:
            counted = window[start] = set()
            self._due.pop(symbol, None)  # its keys are forgotten by the close too
        return counted

    def _forget_counted(self, symbol: str, watermark: int) -> None:
        """Drop the trade keys of finest buckets past their retention: a trade of theirs is late now."""
        window = self._counted.get(symbol)
        if not window:
            return
        horizon = watermark - self._finest.millis - self.retention_ms(self._finest)
        for start in [start for start in window if start <= horizon]:
            del window[start]

    def tick_clock(self, wall: float | None = None) -> list[CandleEvent]:
        """Close buckets of quiet symbols; call periodically."""
        wall = time.time() if wall is None else wall
        if self._version_floor:
            self._forget_spent_floors()
        return self._close(set(self._watermark), wall)

    def _forget_spent_floors(self) -> None:
        """Drop the version floors of buckets the ticks can no longer create (past their retention)."""
        spent = [
            (symbol, interval, start)
            for symbol, interval, start in self._version_floor
            if start + interval.millis + self.retention_ms(interval) <= self._watermark.get(symbol, -1)
        ]
        for key in spent:
            del self._version_floor[key]

    def _close(self, symbols: set[str], wall: float) -> list[CandleEvent]:
        """Emit the closable buckets of ``symbols`` and forget the final ones: only those tokens' buckets are
        looked at, and of those only the tokens with a bucket due (the close index, ``_due``)."""
        out: list[CandleEvent] = []
        now_ms = int(wall * 1000)
        for symbol in symbols:
            buckets = self._buckets.get(symbol)
            if not buckets:
                continue
            watermark = self._watermark[symbol]
            idle = wall - self._last_seen_wall.get(symbol, wall) >= self.idle_close_s
            due = self._due.get(symbol)
            if due is not None and due[0] is buckets and watermark < due[1] and not (idle and now_ms >= due[2]):
                continue
            self._forget_counted(symbol, watermark)
            by_watermark, by_wall = self._close_token(buckets, watermark, idle, now_ms, out)
            if window := self._counted.get(symbol):
                by_watermark = min(by_watermark, min(window) + self._finest.millis + self.retention_ms(self._finest))
            self._due[symbol] = (buckets, by_watermark, by_wall)
        out.sort(key=lambda c: (c.symbol, c.interval.seconds, c.ts))
        return out

    def _close_token(
        self, buckets: dict[tuple[Interval, int], _Acc], watermark: int, idle: bool, now_ms: int, out: list[CandleEvent]
    ) -> tuple[int, int]:
        """Emit a token's closable buckets into ``out`` and forget its final ones; returns the watermark and the
        wall time (ms, once idle) from which one of the buckets left closes or is forgotten."""
        by_watermark = by_wall = _NEVER
        for key, acc in list(buckets.items()):
            end = acc.start_ms + acc.interval.millis
            if not acc.emitted and (watermark >= end + self.lateness_ms or (idle and end <= now_ms)):
                acc.emitted = True
                out.append(acc.to_event(self.source))
            if not acc.emitted:
                by_watermark, by_wall = min(by_watermark, end + self.lateness_ms), min(by_wall, end)
                continue
            final = end + self.retention_ms(acc.interval)
            if watermark >= final or (idle and final <= now_ms):
                del buckets[key]
            else:
                by_watermark, by_wall = min(by_watermark, final), min(by_wall, final)
        return by_watermark, by_wall

    def restore(
        self,
        ticks: Iterable[TickEvent],
        published: Iterable[CandleEvent] = (),
        *,
        complete_from_ms: int | None = None,
        wall: float | None = None,
        batch: int = 500,
    ) -> RestoreResult:
        """Rebuild the state a previous instance had reached, publishing nothing (start after a restart).

        ``ticks``: the ticks the previous instance had counted, in their order on the bus (the ticks topic
        up to the ingest consumer group's committed offsets), from before the oldest bucket that can still
        change. They go through :meth:`add` in batches, so OHLCV, trade counts, the dedup keys and the
        watermark come out as they were; the candles that closes are dropped (they were published).
        ``published``: candles already on the candles topic. A bucket with one of this builder's source is
        marked emitted (it may have been closed by the idle clock, or by a batch processed but not yet
        committed), and its version counter continues from the highest published version, so what this
        instance emits for it next is newer (also for a bucket not held now that a redelivered batch creates,
        and for a token none of whose ticks were committed).
        A published candle may count ticks after the committed offsets (kill -9 between publishing and
        committing): the bucket publishes no correction until the redelivered ticks take it past that
        candle's trades, so nothing smaller goes out after it.
        ``complete_from_ms``: a bucket opening before it may miss ticks that were not read: it takes the
        content of its latest published candle, or is dropped when it has none (an open bucket the read
        did not reach; logged by the caller).
        """
        wall = time.time() if wall is None else wall
        replayed = self.replay(ticks, wall, batch)
        result = self.settle(published, complete_from_ms=complete_from_ms)
        result.ticks = replayed
        return result

    def replay(self, ticks: Iterable[TickEvent], wall: float, batch: int = 500) -> int:
        """Count ticks already counted once before, in batches as the consumer handled them, publishing
        nothing (the first half of :meth:`restore`); returns how many."""
        n = 0
        for chunk in chunked(ticks, batch):
            self.add(chunk, wall)
            n += len(chunk)
        return n

    def wants_published(self, candle: CandleEvent) -> bool:
        """Whether :meth:`settle` needs this published candle: of this builder's source, for a bucket held or
        one the ticks can still create (a long read keeps only these)."""
        if candle.source != self.source or not candle.closed:
            return False
        start = int(candle.ts.timestamp() * 1000)
        if (candle.interval, start) in self._buckets.get(candle.symbol, {}):
            return True
        end = start + candle.interval.millis + self.retention_ms(candle.interval)
        return end > self._watermark.get(candle.symbol, 0)

    def settle(self, published: Iterable[CandleEvent], *, complete_from_ms: int | None = None) -> RestoreResult:
        """The second half of :meth:`restore`, once the ticks are replayed: mark what was published."""
        result = RestoreResult()
        latest: dict[tuple[str, Interval, int], CandleEvent] = {}
        for c in published:
            if not self.wants_published(c):
                continue
            key = (c.symbol, c.interval, int(c.ts.timestamp() * 1000))
            if key not in latest or c.version >= latest[key].version:
                latest[key] = c
        for key, last in latest.items():
            symbol, interval, start = key
            # a token none of whose ticks were committed has no watermark: the redelivered ticks recreate them all
            creatable = start + interval.millis + self.retention_ms(interval) > self._watermark.get(symbol, 0)
            held = (interval, start) in self._buckets.get(symbol, {})
            if not held and creatable:
                self._version_floor[key] = (last.version - last.trades * 1000, last.trades)
        for key, acc in self._held():
            candle = latest.get(key)
            if complete_from_ms is not None and acc.start_ms < complete_from_ms:
                if candle is None:
                    del self._buckets[acc.symbol][(acc.interval, acc.start_ms)]
                    result.dropped += 1
                    continue
                # what was read of it is a part; the published candle is the whole (up to its last version)
                acc.open, acc.high, acc.low, acc.close = candle.open, candle.high, candle.low, candle.close
                acc.volume, acc.trades = candle.volume, candle.trades
                acc.open_ts = acc.start_ms  # its first trade's time is unknown: the open stays
                result.from_candles += 1
            if candle is not None:
                acc.emitted = True
                acc.version = max(acc.version, candle.version - candle.trades * 1000)
                acc.published_trades = candle.trades
            result.buckets += 1
            result.emitted += acc.emitted
        return result

    def _held(self) -> list[tuple[tuple[str, Interval, int], _Acc]]:
        """Every bucket held, keyed (symbol, interval, open time): a list, so the caller may drop some."""
        return [
            ((sym, iv, start), acc) for sym, buckets in self._buckets.items() for (iv, start), acc in buckets.items()
        ]

    def open_buckets(self) -> list[CandleEvent]:
        """The buckets held, as candles (``closed`` False for those not emitted yet; ``version`` the one
        their next emission would carry), counting nothing: for tests and diagnostics."""
        out = []
        for _, acc in self._held():
            candle = acc.to_event(self.source)
            acc.version -= 1
            out.append(candle.model_copy(update={"closed": acc.emitted}))
        out.sort(key=lambda c: (c.symbol, c.interval.seconds, c.ts))
        return out

    def flush_all(self) -> list[CandleEvent]:
        """Emit every bucket not yet emitted (graceful shutdown); open ones go out as they are."""
        out = []
        for _, acc in self._held():
            if not acc.emitted:
                acc.emitted = True
                candle = acc.to_event(self.source)
                out.append(candle.model_copy(update={"closed": False}))
        return out
