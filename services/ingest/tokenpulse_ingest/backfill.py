"""Backfill: replay the bundled real history through the normal pipeline (candle events -> bus)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import ParamSpec, TypeVar

from tokenpulse_shared.bus import Bus
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.events import CandleEvent, Interval, MarketCapEvent, utcnow, validate_many
from tokenpulse_shared.gctools import gc_paused
from tokenpulse_shared.topics import CANDLES, MARKETCAPS

from tokenpulse_ingest.bundle import MARKETCAP_FILES, bar_row, iter_bundle, read_marketcaps

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


Progress = Callable[[str, int, int], None]


@dataclass
class BackfillResult:
    series: int = 0
    candles: int = 0
    rejected: int = 0


def _listed(read: Callable[P, Iterator[T]]) -> Callable[P, list[T]]:
    """``read`` taking the same arguments, its items gathered in a list with the cyclic GC paused (the
    bundle's millions of small objects hold no cycles, and collections would rescan them)."""

    @functools.wraps(read)
    def gather(*args: P.args, **kwargs: P.kwargs) -> list[T]:
        with gc_paused():
            return list(read(*args, **kwargs))

    return gather


plan = _listed(iter_bundle)
"""Every (symbol, interval, bars) series :func:`iter_bundle` selects, as a list."""


async def publish_history(
    bus: Bus,
    series: list[tuple[str, Interval, list]],
    *,
    batch_size: int = 5000,
    progress: Progress | None = None,
) -> BackfillResult:
    """Publish every bar as a candle event; invalid bars are counted and skipped with a reason.

    The cyclic garbage collector is paused meanwhile: a replay creates millions of short-lived,
    acyclic objects (freed by reference counting) and the collector's repeated scans of them
    cost about as much as the validation itself (see docs/benchmarks.md).
    """
    with gc_paused():
        return await _publish_history(bus, series, batch_size=batch_size, progress=progress)


async def _publish_history(
    bus: Bus, series: list[tuple[str, Interval, list]], *, batch_size: int, progress: Progress | None
) -> BackfillResult:
    result = BackfillResult(series=len(series))
    # BTC's daily candles first, and on the in-process bus scored before any other token's (about a
    # second): the published ``trader.strength_vs_btc`` component needs BTC's return of the same day,
    # and the bus orders events per symbol, not across symbols (on Kafka the consumers may still
    # interleave them, which is why the component is published but not averaged into the grade)
    series = sorted(series, key=lambda s: not (s[0] == "BTC" and s[1] is Interval.D1))
    for symbol, interval, bars in series:
        label = f"{symbol} {interval.value}"
        produced_at = utcnow()  # one clock read per series, not one per event
        for start in range(0, len(bars), batch_size):
            chunk = bars[start : start + batch_size]
            events, rejected = validate_many(CandleEvent, [bar_row(symbol, interval, b, produced_at) for b in chunk])
            for index, reason in rejected:
                log.warning("skipping %s bar at %s: %s", label, chunk[index].ts_ms, reason)
            result.rejected += len(rejected)
            await bus.publish(CANDLES, events)
            await asyncio.sleep(0)  # let consumers and API requests run between batches
            result.candles += len(events)
            if progress:
                progress(label, min(start + batch_size, len(bars)), len(bars))
        if symbol == "BTC" and interval is Interval.D1 and isinstance(bus, InMemoryBus):
            await bus.drain(timeout=600)
    return result


async def publish_marketcaps(bus: Bus, bundle_dir: Path, symbols: list[str] | None = None) -> int:
    """Replay the bundled market-cap history (tokens and the total market) as market-cap events."""
    produced_at = utcnow()
    total = 0
    with gc_paused():
        for spec in MARKETCAP_FILES:
            if symbols is not None and spec.symbol is not None and spec.symbol not in symbols:
                continue
            points = read_marketcaps(bundle_dir, spec)
            rows = [
                {
                    "symbol": spec.symbol,
                    "ts": datetime.fromtimestamp(p.ts_ms / 1000, UTC),
                    "market_cap": p.market_cap,
                    "volume_24h": p.volume,
                    "source": "coingecko",
                    "produced_at": produced_at,
                    "event_id": f"hist-cap-{spec.symbol or 'TOTAL'}-{p.ts_ms}",
                }
                for p in points
            ]
            events, rejected = validate_many(MarketCapEvent, rows)
            for index, reason in rejected:
                log.warning("skipping market cap %s row %d: %s", spec.path, index, reason)
            await bus.publish(MARKETCAPS, events)
            total += len(events)
    return total
