"""Backfill: replay the bundled real history through the normal pipeline (candle events -> bus)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tokenpulse_shared.bus import Bus
from tokenpulse_shared.events import CandleEvent, Interval, utcnow
from tokenpulse_shared.topics import CANDLES

from tokenpulse_ingest.bundle import bar_to_event, iter_bundle

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
    return list(iter_bundle(bundle_dir, symbols, intervals, start_ms, end_ms))


async def publish_history(
    bus: Bus,
    series: list[tuple[str, Interval, list]],
    *,
    batch_size: int = 5000,
    progress: Progress | None = None,
) -> BackfillResult:
    """Publish every bar as a candle event; invalid bars are counted and skipped with a reason."""
    result = BackfillResult(series=len(series))
    for symbol, interval, bars in series:
        label = f"{symbol} {interval.value}"
        batch: list[CandleEvent] = []
        produced_at = utcnow()  # one clock read per series: reading the clock per event is measurable
        for i, bar in enumerate(bars, 1):
            try:
                batch.append(bar_to_event(symbol, interval, bar, produced_at))
            except ValueError:
                result.rejected += 1
            if len(batch) >= batch_size:
                await bus.publish(CANDLES, batch)
                result.candles += len(batch)
                batch = []
                if progress:
                    progress(label, i, len(bars))
        if batch:
            await bus.publish(CANDLES, batch)
            result.candles += len(batch)
        if progress:
            progress(label, len(bars), len(bars))
    return result
