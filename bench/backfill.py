"""Bulk backfill, before and after, in one run (issue 22, item 4): the bundled history into a fresh embedded
store, rows/s end to end (CSV files to rows stored, counted with ``SELECT count()``).

* **events** — the path the bus takes (``bench/run.py``'s "pipeline"): CSV → validated pydantic candle
  events → in-process bus → store writer → chDB, 5,000 rows per insert;
* **columnar** — ``tokenpulse_ingest.bulk.load_bundle``: pyarrow CSV → vectorised validation → Arrow tables
  → ``insert_arrow`` 50,000 rows per insert; also timed by stage (read and merge, validation and roll-ups
  inclusive; building the Arrow table; the inserts) and re-run on the same store (idempotence: nothing added).

Run: ``.venv/bin/python bench/backfill.py [--rounds N] [--json OUT] [--record]``; prints Markdown tables.
``--record`` appends the rows/s to docs/bench/history.csv (bench/plot.py's history).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from tokenpulse_ingest.backfill import plan
from tokenpulse_ingest.bulk import bundle_series, history_table, insert_history
from tokenpulse_ingest.columnar import Rejects
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.store import Store

from bench import plot
from testkit.wiring import chdb_store, store_history

GOAL = 250_000  # rows/s end to end, embedded (issue 22)


async def _count(store: Store) -> int:
    return int((await store.query("SELECT count() FROM candles"))[0][0])


async def events_path(work: Path) -> dict[str, float]:
    settings = Settings()
    async with chdb_store(work, fresh=True) as store:
        await store.query("SELECT 1")
        t0, c0 = time.perf_counter(), time.process_time()
        await store_history(store, settings, plan(settings.runtime.bundle_dir))
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        return {"rows": await _count(store), "seconds": seconds, "cpu": cpu}


async def columnar_path(work: Path) -> dict[str, float]:
    settings = Settings()
    async with chdb_store(work, fresh=True) as store:
        await store.query("SELECT 1")
        t0, c0 = time.perf_counter(), time.process_time()
        rejects = Rejects()
        series = await asyncio.to_thread(bundle_series, settings.runtime.bundle_dir, None, None, None, None, rejects)
        t1 = time.perf_counter()
        table = history_table(series)
        t2 = time.perf_counter()
        await insert_history(store, table)
        t3, cpu = time.perf_counter(), time.process_time() - c0
        rows = await _count(store)
        await insert_history(store, table)  # the same history again: the engine skips every block
        again = await _count(store) - rows
        return {
            "rows": rows, "seconds": t3 - t0, "cpu": cpu, "read_validate": t1 - t0, "table": t2 - t1, "insert": t3 - t2,
            "rerun_added": again, "rejected": rejects.count,
        }  # fmt: skip


def median_of(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def record(rates: dict[str, float], stamp: datetime, note: str) -> None:
    """Append the rows/s of both paths to docs/bench/history.csv and re-plot the backfill history."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    rows = [
        plot.Measurement("backfill", f"{name} end to end", f"{stamp:%Y-%m-%d %H:%M}", round(rate), "rows/s",
                         f">={GOAL}" if name.startswith("columnar") else "", commit, note)
        for name, rate in rates.items()
    ]  # fmt: skip
    with plot.HISTORY_CSV.open("a", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([[getattr(r, c) for c in plot.HISTORY_COLUMNS] for r in rows])
    plot.plot_bench_history("backfill", [r for r in plot.read_history() if r.bench == "backfill"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "3")))
    parser.add_argument("--json", type=Path, default=None, help="write a summary here")
    parser.add_argument("--record", action="store_true", help="append to docs/bench/history.csv")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tokenpulse-bench-backfill-"))
    stamp = datetime.now(UTC)
    print(f"# {stamp:%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, {args.rounds} rounds (median)\n")  # fmt: skip
    before = [asyncio.run(events_path(tmp / f"events-{i}")) for i in range(args.rounds)]
    after = [asyncio.run(columnar_path(tmp / f"columnar-{i}")) for i in range(args.rounds)]
    shutil.rmtree(tmp, ignore_errors=True)
    rows = int(before[0]["rows"])
    assert all(r["rows"] == rows for r in before + after), "both paths must store the same rows"
    rates = {
        "events (before)": rows / median_of(before, "seconds"),
        "columnar (after)": rows / median_of(after, "seconds"),
    }
    cpu_rates = {name: rows / median_of(runs, "cpu") for name, runs in zip(rates, (before, after), strict=True)}
    print("| backfill path | rows stored | seconds | rows/s end to end | rows per CPU-second (all threads) |")
    print("|---|---|---|---|---|")
    for (name, rate), runs in zip(rates.items(), (before, after), strict=True):
        print(f"| {name} | {rows:,} | {median_of(runs, 'seconds'):.2f} | {rate:,.0f} | {cpu_rates[name]:,.0f} |")
    stages = {name: median_of(after, key) / rows * 1e6 for name, key in (
        ("read CSV, validate, merge, roll up", "read_validate"), ("build the Arrow table (ids, types)", "table"),
        ("insert_arrow, 50,000 rows per block", "insert"))}  # fmt: skip
    print("\n| columnar stage (same run) | µs per row |\n|---|---|")
    for name, us in stages.items():
        print(f"| {name} | {us:.2f} |")
    print(f"\ngoal ≥ {GOAL:,} rows/s: {'met' if rates['columnar (after)'] >= GOAL else 'not met'}; "
          f"speed-up {rates['columnar (after)'] / rates['events (before)']:.1f}x; re-run added "
          f"{int(max(r['rerun_added'] for r in after))} rows; rejected {int(after[0]['rejected'])} rows")  # fmt: skip
    summary = {"rows": rows, "rows_per_s": rates, "rows_per_cpu_s": cpu_rates, "stages_us_per_row": stages,
               "rounds": args.rounds,
               "rerun_added": max(r["rerun_added"] for r in after), "rejected": after[0]["rejected"]}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    if args.record:
        record(rates, stamp, f"{args.rounds} rounds (median); bench/backfill.py")
    plot.save(
        "backfill",
        "Bulk backfill, embedded: events (before) and columnar (after), same run",
        [
            plot.groups(
                "rows/s", {k: {"end to end": rates[k], "per CPU-second": cpu_rates[k]} for k in rates}, "rows/s"
            ),
            plot.bars("columnar, µs per row by stage", stages, "µs", fmt="{:.2f}"),
        ],
        columns=2,
        footer=plot.footer(f"{args.rounds} rounds (median)"),
    )


if __name__ == "__main__":
    main()
