"""Backfill: replay the bundled real history through the normal pipeline (candle events -> bus)."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tokenpulse_shared.bus import Bus
from tokenpulse_shared.events import CandleEvent, Interval, utcnow, validate_many
from tokenpulse_shared.topics import CANDLES

from tokenpulse_ingest.bundle import bar_row, iter_bundle

log = logging.getLogger(__name__)


@contextmanager
def gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


Progress = Callable[[str, int, int], None]


@dataclass
class BackfillResult:
    series: int = 0
    candles: int = 0
    rejected: int = 0


def plan(
    bundle_dir: Path,
    symbols: list[str] | None = None,
    intervals: list[Interval] | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> list[tuple[str, Interval, list]]:
    with gc_paused():
        return list(iter_bundle(bundle_dir, symbols, intervals, start_ms, end_ms))


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
            result.candles += len(events)
            if progress:
                progress(label, min(start + batch_size, len(bars)), len(bars))
    return result
