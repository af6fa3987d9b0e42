"""Backfill of missing candles over the exchanges' REST APIs, published on ``tokenpulse.candles.v1``.

``backfill_gap(exchange, symbol, since, until)`` fetches, for every interval, the closed
candles whose open time is in ``[bucket(since), until)`` and ends by ``until`` (the candle
still open is left to the ticks), at most ``max_bars`` per interval (the newest). It runs
at start (from the last stored candle to now) and after a feed gap (the connectors' hook).

Candles have the same shape as the bundled history (:func:`bundle.bar_row`): the same
symbol (base asset), interval, aligned open time, ``source`` = the exchange; the event id
is deterministic (``rest-EXCHANGE-SYMBOL-INTERVAL-OPENMS``), so a repeated backfill is
deduplicated by the store writer. Prices are in the exchange's quote (Binance: USDT, like
the bundled Binance history; Coinbase and Kraken: USD).

How a candle meets another of the same bucket (the store keeps the highest ``version``):

* bundled history: version 0 — a backfilled candle (version 1) replaces it;
* tick-built candle: version ``trades x 1000 + n`` ≥ 1001 — it wins over a backfilled one,
  so the REST backfill only fills buckets the ticks left empty (a bucket the feed saw only
  part of keeps the tick-built candle: see docs/ingest.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tokenpulse_shared.bus import Bus
from tokenpulse_shared.events import CandleEvent, Interval, utcnow, validate_many
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.store import Store
from tokenpulse_shared.topics import CANDLES

from tokenpulse_ingest.bulk import store_bars
from tokenpulse_ingest.bundle import Bar, bar_row
from tokenpulse_ingest.columnar import Rejects
from tokenpulse_ingest.rest.client import Sleep
from tokenpulse_ingest.venues.history import CandleApi
from tokenpulse_ingest.venues.registry import venue

log = logging.getLogger(__name__)

REST_VERSION = 1  # above bundled history (0), below any tick-built candle (>= 1001)
Progress = Callable[[str, int, int], None]  # (label, done, total)


def rest_event_id(exchange: str, symbol: str, interval: Interval, ts_ms: int) -> str:
    return f"{_prefix(exchange)}{symbol}-{interval.value}-{ts_ms}"


def bars_to_events(exchange: str, symbol: str, interval: Interval, bars: list[Bar]) -> tuple[list[CandleEvent], int]:
    produced_at = utcnow()
    rows = []
    for bar in bars:
        row = bar_row(symbol, interval, bar, produced_at)
        row["event_id"] = rest_event_id(exchange, symbol, interval, bar.ts_ms)
        row["version"] = REST_VERSION
        row["trades"] = bar.trades
        rows.append(row)
    events, rejected = validate_many(CandleEvent, rows)
    for index, reason in rejected:
        log.warning("skipping %s %s %s candle at %s: %s", exchange, symbol, interval.value, bars[index].ts_ms, reason)
    return events, len(rejected)


@dataclass
class GapResult:
    exchange: str
    symbol: str
    candles: dict[str, int] = field(default_factory=dict)  # per interval
    rejected: int = 0
    requests: int = 0

    @property
    def total(self) -> int:
        return sum(self.candles.values())


def _prefix(exchange: str) -> str:
    return f"rest-{exchange}-"


def plan_windows(
    since_ms: int, until_ms: int, intervals: Iterable[Interval], max_bars: int, now_ms: int | None = None
) -> list[tuple[Interval, int, int]]:
    """Per interval, the [start, end) of open times to fetch: closed candles only, at most ``max_bars``."""
    now_ms = int(utcnow().timestamp() * 1000) if now_ms is None else now_ms
    until_ms = min(until_ms, now_ms)
    out = []
    for interval in intervals:
        start = interval.bucket_ms(since_ms)
        end = interval.bucket_ms(until_ms)  # buckets opening before it have closed by until
        start = max(start, end - max_bars * interval.millis)
        if end > start:
            out.append((interval, start, end))
    return out


class RestBackfiller:
    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        *,
        intervals: Iterable[Interval] = tuple(Interval),
        sleep: Sleep | None = None,
        exchanges: dict[str, CandleApi] | None = None,
        max_bars: int | None = None,
        store: Store | None = None,
    ) -> None:
        self.bus = bus
        self.store = store  # set: candles go straight to the store by the columnar path, none on the bus
        self.settings = settings
        self.intervals = tuple(intervals)
        self.max_bars = max_bars if max_bars is not None else settings.ingest.rest_backfill_max_bars
        self._sleep = sleep
        self.exchanges: dict[str, CandleApi] = dict(exchanges or {})
        self._locks: dict[str, asyncio.Lock] = {}

    def exchange(self, name: str) -> CandleApi:
        if name not in self.exchanges:
            self.exchanges[name] = venue(name).candle_api(self.settings, sleep=self._sleep)
        return self.exchanges[name]

    async def _deliver(self, exchange: str, symbol: str, interval: Interval, bars: list[Bar]) -> tuple[int, int]:
        """(candles delivered, rows rejected): to the store (columnar) when it is given, else as events."""
        if self.store is not None:
            rejects = Rejects()
            stored = await store_bars(self.store, bars, symbol, interval, event_prefix=_prefix(exchange),
                                      version=REST_VERSION, rejects=rejects)  # fmt: skip
            for example in rejects.examples:
                log.warning("skipping %s %s %s candle: %s", exchange, symbol, interval.value, example["reason"])
            return stored, rejects.count
        events, rejected = bars_to_events(exchange, symbol, interval, bars)
        if events:
            await self.bus.publish(CANDLES, events)
        return len(events), rejected

    async def aclose(self) -> None:
        for ex in self.exchanges.values():
            await ex.client.aclose()

    async def backfill_gap(
        self,
        exchange: str,
        symbol: str,
        since: datetime,
        until: datetime,
        *,
        intervals: Iterable[Interval] | None = None,
        progress: Progress | None = None,
        now: datetime | None = None,
    ) -> GapResult:
        """Fetch and publish the candles of ``symbol`` missing in [since, until) from ``exchange``.

        One backfill per exchange at a time (they share its rate limits)."""
        ex = self.exchange(exchange)
        since_ms, until_ms = int(since.timestamp() * 1000), int(until.timestamp() * 1000)
        now_ms = int((now or datetime.now(UTC)).timestamp() * 1000)
        windows = plan_windows(since_ms, until_ms, intervals or self.intervals, self.max_bars, now_ms)
        result = GapResult(exchange, symbol)
        requests_before, bad_rows_before = ex.client.stats.requests, ex.bad_rows
        async with self._locks.setdefault(exchange, asyncio.Lock()):
            for interval, start, end in windows:
                label = f"{exchange} {symbol} {interval.value}"
                expected = (end - start) // interval.millis
                done = 0

                def on_page(n: int, label: str = label, expected: int = expected) -> None:
                    nonlocal done
                    done += n
                    if progress:
                        progress(label, min(done, expected), expected)

                bars = await ex.fetch(symbol, interval, start, end, on_page)
                stored, rejected = await self._deliver(exchange, symbol, interval, bars)
                result.candles[interval.value] = stored
                result.rejected += rejected
                if progress:
                    progress(label, expected, expected)
                if len(bars) < expected:
                    log.info(
                        "%s: %d of %d %s candles of %s available (no trades, or older than the exchange keeps)",
                        exchange,
                        len(bars),
                        expected,
                        interval.value,
                        symbol,
                    )
        result.requests = ex.client.stats.requests - requests_before
        result.rejected += ex.bad_rows - bad_rows_before  # rows the venue's parser refused
        log.info("backfilled %d candles of %s from %s in %d requests", result.total, symbol, exchange, result.requests)
        return result
