"""Benchmarks of ingest's REST half (issue #3), not timed tests: run with `make bench`.

1. Reconciliation latency per price update (p50/p99 µs): one tick per update, 8 tokens x 5
   sources, one drifting 5 % — the reconciler (USD/USDT normalisation, MAD outliers, volume x
   freshness weights), side by side with the v0 median it replaced, same ticks, same run.
2. REST backfill rows/s against the fake exchange (a separate process on loopback serving the
   bundled Dec 2024 BTC 1-minute history in Binance's format): fetch + parse only, and fetch +
   parse + candle events published on the in-process bus.

Prints Markdown to paste into docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tokenpulse_ingest.prices import PriceReconciler
from tokenpulse_ingest.rest_backfill import RestBackfiller
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.events import Interval, PriceEvent, TickEvent
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.topics import CANDLES

from bench import plot

ROOT = Path(__file__).resolve().parents[1]

UPDATES = int(os.environ.get("BENCH_UPDATES", "50000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SYMBOLS = ["BTC", "ETH", "BNB", "XRP", "ADA", "DOGE", "SOL", "LTC"]
SOURCES = [("binance", "USDT"), ("coinbase", "USD"), ("kraken", "USD"), ("bitstamp", "USD"), ("okx", "USDT")]


class MedianV0:
    """The v0 reconciler this replaces (median of the fresh sources' latest prices), for comparison."""

    def __init__(self, stale_after_s: float = 30.0) -> None:
        self.stale_after_s = stale_after_s
        self._latest: dict[str, dict[str, tuple[float, float]]] = {}
        self._published: dict[str, float] = {}

    def update(self, ticks: list[TickEvent]) -> list[PriceEvent]:
        touched: dict[str, datetime] = {}
        for tick in ticks:
            by_source = self._latest.setdefault(tick.symbol, {})
            ts = tick.ts.timestamp()
            if ts >= by_source.get(tick.source, (0.0, 0.0))[0]:
                by_source[tick.source] = (ts, tick.price)
            if tick.symbol not in touched or tick.ts > touched[tick.symbol]:
                touched[tick.symbol] = tick.ts
        out = []
        for symbol, at in touched.items():
            newest = at.timestamp()
            fresh = {s: p for s, (t, p) in self._latest[symbol].items() if newest - t <= self.stale_after_s}
            price = statistics.median(fresh.values())
            out.append(
                PriceEvent(
                    symbol=symbol,
                    ts=at,
                    price=price,
                    sources=sorted(fresh),
                    prev_price=self._published.get(symbol),
                )
            )
            self._published[symbol] = price
        return out


def make_ticks(n: int, seed: int = 1) -> list[TickEvent]:
    rng = random.Random(seed)
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    price = dict.fromkeys(SYMBOLS, 100.0)
    out = []
    for i in range(n):
        sym = SYMBOLS[i % len(SYMBOLS)]
        price[sym] *= 1 + rng.gauss(0, 0.0005)
        source, quote = SOURCES[rng.randrange(len(SOURCES))]
        drift = 1.05 if source == "bitstamp" else 1 + rng.gauss(0, 0.0003)
        out.append(
            TickEvent(
                symbol=sym,
                source=source,
                ts=t0 + timedelta(milliseconds=20 * i),
                price=price[sym] * drift,
                size=rng.lognormvariate(0, 1),
                quote=quote,
                trade_id=str(i),
            )
        )
    return out


def latency(kind: str, ticks: list[TickEvent]) -> tuple[list[float], list[float]]:
    """Per update: wall-clock µs and this thread's CPU µs (on a loaded machine the wall p99 is the
    scheduler's time slice, the CPU p99 the code's own tail)."""
    rec: PriceReconciler | MedianV0 = PriceReconciler() if kind == "reconciler" else MedianV0()
    wall = 1_000_000.0
    walls, cpus = [], []
    clock, cpu = time.perf_counter_ns, time.thread_time_ns
    for i, t in enumerate(ticks):
        c0, w0 = cpu(), clock()
        if isinstance(rec, PriceReconciler):
            rec.update([t], wall=wall + i * 0.02)
        else:
            rec.update([t])
        walls.append((clock() - w0) / 1000)
        cpus.append((cpu() - c0) / 1000)
    return walls, cpus


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_fake() -> tuple[subprocess.Popen[str], str]:
    code = (
        "import sys\n"
        "from testkit.rest_exchange import FakeExchange, load_series\n"
        "from testkit.server import ThreadedServer\n"
        "with ThreadedServer(FakeExchange(load_series(), weight_limit=10**9).app()) as s:\n"
        "    print(s.url, flush=True)\n"
        "    sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


async def backfill(url: str, publish: bool) -> tuple[int, int, float]:
    settings = Settings(binance={"rest_url": url, "weight_per_minute": 10**6})
    bus = InMemoryBus()
    count = 0

    async def sink(events: list) -> None:
        nonlocal count
        count += len(events)

    bus.subscribe(CANDLES, "bench", sink)
    await bus.start()
    backfiller = RestBackfiller(bus, settings, intervals=[Interval.M1], max_bars=10**9)
    since, until = datetime(2024, 12, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)
    ex = backfiller.exchange("binance")
    t0 = time.perf_counter()
    if publish:
        result = await backfiller.backfill_gap("binance", "BTC", since, until, now=until)
        await bus.drain()
        rows = result.total
    else:
        rows = len(await ex.fetch("BTC", Interval.M1, int(since.timestamp() * 1000), int(until.timestamp() * 1000)))
    elapsed = time.perf_counter() - t0
    requests = ex.client.stats.requests
    await backfiller.aclose()
    await bus.stop()
    return rows, requests, elapsed


def main() -> None:
    ticks = make_ticks(UPDATES)
    print(f"Latest run — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, {ROUNDS} rounds (median of the per-round figures)\n")  # fmt: skip
    print(
        "| reconciliation (one tick per update, 8 tokens x 5 sources) | updates | wall p50 µs | wall p99 µs "
        "| CPU p50 µs | CPU p99 µs |"
    )
    print("|---|---|---|---|---|---|")
    recon: dict[str, dict[str, float]] = {}
    for kind in ("reconciler", "v0 median"):
        rounds = [latency(kind, ticks) for _ in range(ROUNDS)]
        figures = [
            statistics.median(pct(r[which], q) for r in rounds) for which in (0, 1) for q in (0.5, 0.99)
        ]  # fmt: skip
        print(f"| {kind} | {len(ticks):,} | " + " | ".join(f"{f:.1f}" for f in figures) + " |")
        recon[kind] = dict(zip(("wall p50", "wall p99", "CPU p50", "CPU p99"), figures, strict=True))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n(load average {load:.1f} on {os.cpu_count()} cores during the run)")
    proc, url = start_fake()
    backfill_rates: dict[str, float] = {}
    try:
        print("\n| REST backfill, Binance format, fake exchange on loopback | rows | requests | s | rows/s |")
        print("|---|---|---|---|---|")
        for label, publish in (("fetch + parse", False), ("fetch + parse + candle events on the bus", True)):
            runs = [asyncio.run(backfill(url, publish)) for _ in range(ROUNDS)]
            rows, requests = runs[0][0], runs[0][1]
            secs = statistics.median(r[2] for r in runs)
            print(f"| {label} | {rows:,} | {requests} | {secs:.2f} | {rows / secs:,.0f} |")
            backfill_rates[label] = rows / secs
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
    plot.save(
        "feeds_rest",
        "Reference-price reconciliation and REST backfill",
        [
            plot.groups(f"one reference-price update ({len(ticks):,} updates)", recon, "µs", log=True, fmt="{:.1f}"),
            plot.bars("REST backfill from a fake exchange on loopback", backfill_rates, "rows/s"),
        ],
        footer=plot.footer(f"{ROUNDS} rounds (median)"),
    )


if __name__ == "__main__":
    main()
