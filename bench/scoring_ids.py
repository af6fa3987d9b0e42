"""Micro-benchmark: what scoring's deterministic output event ids cost on its hot path.

Scoring used to draw random ids (one ``os.urandom`` call per batch, sliced per event); it now builds
each candle's ids from the series, the candle's open time and version (``output_key``, inlined in
``ScoringService._process``: one f-string per candle). This times, per candle, in CPU time:

1. the id part alone, old way and new way, over the same number of events;
2. the service batch step (``_process``: candle events in, indicator/grade/signal events out) on the
   bundled daily history, which includes the new ids;

and prints the id difference as a share of the batch step. Usage: ``python -m bench.scoring_ids
[candles] [rounds]`` (defaults 20,000 and 5). On a shared, loaded machine the figures are indicative
only; the share is what to look at.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from tokenpulse_ingest.backfill import plan
from tokenpulse_ingest.bundle import bar_to_event
from tokenpulse_scoring.service import ScoringService
from tokenpulse_shared.events import Interval
from tokenpulse_shared.gctools import gc_paused
from tokenpulse_shared.settings import Settings


def random_ids(n: int) -> float:
    """The old way: one urandom call, sliced into 32-hex ids; µs per id."""
    t = time.process_time()
    raw = os.urandom(16 * n).hex()
    ids = iter([raw[i : i + 32] for i in range(0, 32 * n, 32)])
    for _ in range(n):
        "ind-" + next(ids)
    return (time.process_time() - t) / n * 1e6


def derived_ids(n: int) -> float:
    """The new way, as inlined in ``_process``; µs per id."""
    series_key = "BTC-1d-"
    t = time.process_time()
    for ts in range(1_700_000_000_000, 1_700_000_000_000 + n):
        basis = None
        key = f"{series_key}{ts}-{0}" if basis is None else f"{series_key}{ts}-{0}-r{basis[0]}.{basis[1]}"
        "ind-" + key
    return (time.process_time() - t) / n * 1e6


def batch_step(candles: list) -> float:  # type: ignore[type-arg]
    """µs of CPU per candle in ``_process``."""
    scoring = ScoringService()
    t = time.process_time()
    for k in range(0, len(candles), 5000):
        scoring._process(candles[k : k + 5000])
    return (time.process_time() - t) / len(candles) * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    series = plan(Settings().runtime.bundle_dir, None, [Interval.D1])
    candles = [bar_to_event(s, i, b) for s, i, bars in series for b in bars]
    candles = candles[:n]
    with gc_paused():
        old = statistics.median(random_ids(len(candles)) for _ in range(rounds))
        new = statistics.median(derived_ids(len(candles)) for _ in range(rounds))
        step = statistics.median(batch_step(candles) for _ in range(rounds))
    print(f"{len(candles):,} daily candles, median of {rounds} rounds, CPU time per candle")
    print("| part | µs per candle |\n|---|---|")
    print(f"| random ids (before) | {old:.2f} |")
    print(f"| derived ids (now) | {new:.2f} |")
    print(f"| `_process` batch step (now) | {step:.2f} |")
    print(f"\nderived - random = {new - old:+.2f} µs per candle = {(new - old) / step:+.1%} of the batch step")


if __name__ == "__main__":
    main()
