"""Benchmarks of the foundation (not timed tests): run with `make bench`.

1. Backfill of all vendored history through the embedded pipeline, in rows/s,
   side by side with two cut-down variants in the same run, so the cost of
   each stage shows: CSV -> events -> in-process bus -> store writer -> chDB,
   the same without the bus, and the chDB insert alone.
2. Seconds from starting `tokenpulse up` on an empty data dir to the first
   correct answer of GET /v1/candles/BTC?interval=1d (first candle 2011-01-01).

Prints a Markdown table to paste into docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from tokenpulse_gateway.writer import TABLES, StoreWriter
from tokenpulse_ingest.backfill import plan
from tokenpulse_ingest.bundle import bar_to_event
from tokenpulse_shared.events import utcnow
from tokenpulse_shared.gctools import gc_paused
from tokenpulse_shared.settings import Settings

from bench import plot
from testkit.wiring import chdb_store, store_history

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


async def pipeline(kind: str, work: Path) -> tuple[int, float, float]:
    """Returns (rows, seconds reading files, seconds publishing and storing)."""
    settings = Settings()
    async with chdb_store(work, fresh=True) as store:
        await store.query("SELECT 1")
        t0 = time.perf_counter()
        series = plan(settings.runtime.bundle_dir)
        t1 = time.perf_counter()
        rows = sum(len(b) for _, _, b in series)
        if kind == "pipeline":
            await store_history(store, settings, series)
        elif kind == "no-bus":
            writer = StoreWriter(store)
            now = utcnow()
            for symbol, interval, bars in series:
                events = [bar_to_event(symbol, interval, b, now) for b in bars]
                for i in range(0, len(events), 5000):
                    await writer.write(TABLES["candles"], events[i : i + 5000])
        elif kind == "insert-only":
            now = utcnow()
            spec = TABLES["candles"]
            prepared = []
            for symbol, interval, bars in series:
                events = [bar_to_event(symbol, interval, b, now) for b in bars]
                prepared += [spec.to_columns(events[i : i + 5000]) for i in range(0, len(events), 5000)]
            t1 = time.perf_counter()
            for columns in prepared:
                await store.insert("candles", columns, spec.columns)
        t2 = time.perf_counter()
        stored = (await store.query("SELECT count() FROM candles"))[0][0]
        assert stored == rows, (stored, rows)
        return rows, t1 - t0, t2 - t1


def stages() -> list[tuple[str, float]]:
    """Microseconds per row of each Python stage of the pipeline, measured in this run."""
    from tokenpulse_ingest.bundle import bar_row
    from tokenpulse_shared.events import CandleEvent, validate_many

    settings = Settings()
    out = []
    t = time.perf_counter()
    series = plan(settings.runtime.bundle_dir)
    n = sum(len(b) for _, _, b in series)
    out.append(("read CSV files, merge, roll up", time.perf_counter() - t))
    now = utcnow()
    t = time.perf_counter()
    rows = [bar_row(sym, i, b, now) for sym, i, bars in series for b in bars]
    out.append(("build event fields (ids, datetimes)", time.perf_counter() - t))
    with gc_paused():  # as the pipeline runs them
        t = time.perf_counter()
        events = []
        for i in range(0, n, 5000):
            events += validate_many(CandleEvent, rows[i : i + 5000])[0]
        out.append(("pydantic validation (bulk TypeAdapter, 5000 per call)", time.perf_counter() - t))
        t = time.perf_counter()
        for row in rows:
            CandleEvent(**row)  # type: ignore[arg-type]
        out.append(("pydantic validation (one constructor per row), for comparison", time.perf_counter() - t))
    t = time.perf_counter()
    for i in range(0, n, 5000):
        TABLES["candles"].to_columns(events[i : i + 5000])
    out.append(("events to insert columns (writer)", time.perf_counter() - t))
    return [(name, sec / n * 1e6) for name, sec in out]


def scoring_throughput() -> list[tuple[str, float]]:
    """Candle updates per second through ScoringService.apply, in process, on the bundled history."""
    from tokenpulse_scoring.service import ScoringService
    from tokenpulse_shared.events import Interval

    out = []
    for label, intervals in (
        ("daily candles (indicators + grades + signals)", [Interval.D1]),
        ("intraday candles (indicators only)", [Interval.M1, Interval.H1]),
    ):
        series = plan(Settings().runtime.bundle_dir, None, intervals)
        scoring = ScoringService()
        n = sum(len(b) for _, _, b in series)
        with gc_paused():
            t = time.perf_counter()
            for symbol, interval, bars in series:
                for b in bars:
                    scoring.apply(symbol, interval, b.ts_ms, b.open, b.high, b.low, b.close, b.volume, 0)
            out.append((label, n / (time.perf_counter() - t)))
    return out


def time_to_first_candle(work: Path) -> float:
    shutil.rmtree(work, ignore_errors=True)
    port = 18000 + os.getpid() % 1000
    exe = str(Path(sys.executable).with_name("tokenpulse"))
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [exe, "up", "--port", str(port), "--data-dir", str(work)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        key = None
        while time.perf_counter() - t0 < 180:
            try:
                if key is None:
                    key = httpx.post(f"{base}/v1/keys", json={"name": "bench"}, timeout=2).json()["key"]
                r = httpx.get(
                    f"{base}/v1/candles/BTC",
                    params={"interval": "1d", "limit": 1},
                    headers={"X-API-Key": key},
                    timeout=2,
                )
                data = r.json().get("data") if r.status_code == 200 else None
                if data and data[0]["ts"] == "2011-01-01T00:00:00Z":
                    return time.perf_counter() - t0
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        raise RuntimeError("no correct candle within 180 s")
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="tokenpulse-bench-"))
    print(
        f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {ROUNDS} rounds (median)\n"
    )
    print(
        "| backfill variant | rows | read files (s) | publish + store (s) "
        "| rows/s (store stage) | rows/s (end to end) |"
    )
    print("|---|---|---|---|---|---|")
    store_rates: dict[str, dict[str, float]] = {}
    for kind in ("pipeline", "no-bus", "insert-only"):
        runs = [asyncio.run(pipeline(kind, tmp / kind)) for _ in range(ROUNDS)]
        rows = runs[0][0]
        read = statistics.median(r[1] for r in runs)
        store = statistics.median(r[2] for r in runs)
        end_to_end = "" if kind == "insert-only" else f"{rows / (read + store):,.0f}"
        print(f"| {kind} | {rows:,} | {read:.2f} | {store:.2f} | {rows / store:,.0f} | {end_to_end} |")
        store_rates[kind] = {"store stage": rows / store}
        if kind != "insert-only":
            store_rates[kind]["end to end"] = rows / (read + store)
    print("\n| stage (same run) | µs per row |\n|---|---|")
    stage_us = dict(stages())
    for name, us in stage_us.items():
        print(f"| {name} | {us:.1f} |")
    print("\n| scoring, in process (same run) | candle updates/s |\n|---|---|")
    scoring = dict(scoring_throughput())
    for label, rate in scoring.items():
        print(f"| {label} | {rate:,.0f} |")
    ttfc = [time_to_first_candle(tmp / "up") for _ in range(ROUNDS)]
    print(
        f"\n`tokenpulse up` on an empty data dir to the first correct candle answer: "
        f"median {statistics.median(ttfc):.1f} s (runs: {', '.join(f'{t:.1f}' for t in ttfc)})"
    )
    shutil.rmtree(tmp, ignore_errors=True)
    plot.save(
        "run",
        "Foundation: backfill of the bundled history, stage costs, scoring, time to first candle",
        [
            plot.groups("backfill, rows/s", store_rates, "rows/s"),
            plot.bars("cost per row by stage", stage_us, "µs per row", fmt="{:.1f}"),
            plot.bars("scoring in process (ScoringService.apply)", scoring, "candle updates/s"),
            plot.bars(
                "`tokenpulse up` (empty data dir) to the first correct candle answer",
                {f"run {i + 1}": t for i, t in enumerate(ttfc)},
                "s",
                fmt="{:.1f}",
            ),
        ],
        columns=2,
        footer=plot.footer(f"{ROUNDS} rounds (median)"),
    )


if __name__ == "__main__":
    main()
