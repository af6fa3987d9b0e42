"""ClickHouse batched insert vs row-at-a-time, on the embedded engine (chDB), side by side in one run.

The store writer inserts a Kafka batch (up to 5,000 events) as one column-oriented insert with a
deduplication token. The alternative a naive consumer would write is one insert per event. Both write
the same real-shaped tick rows through the same ``Store.insert`` (clickhouse-connect on chDB) into the
same ``ticks`` table of a fresh engine; rows/s is what each sustains. Row-at-a-time is measured on
fewer rows (it is slow), which does not flatter it: its cost is per insert, not per row.

Run: ``.venv/bin/python -m bench.insert`` (part of ``make bench``); writes docs/bench/insert.png.
"""

from __future__ import annotations

import asyncio
import platform
import tempfile
import time
from datetime import UTC, datetime, timedelta

from tokenpulse_gateway.writer import TABLES
from tokenpulse_shared.events import TickEvent
from tokenpulse_shared.store import Store
from tokenpulse_shared.store.client import dedup_token

from bench import plot


def ticks(n: int, tag: str) -> list[TickEvent]:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    return [
        TickEvent(symbol="BTC", source=tag, ts=t0 + timedelta(milliseconds=10 * i), price=97000 + i % 500, size=0.01)
        for i in range(n)
    ]


async def run(batched_rows: int = 100_000, batch: int = 5000, single_rows: int = 1000) -> dict[str, float]:
    spec = TABLES["ticks"]
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store(f"chdb://{tmp}/ch").open()
        try:
            out: dict[str, float] = {}
            for name, rows, size in (
                ("batched (5,000 rows/insert)", batched_rows, batch),
                ("row-at-a-time", single_rows, 1),
            ):
                events = ticks(rows, name[:8])
                t = time.perf_counter()
                for i in range(0, rows, size):
                    chunk = events[i : i + size]
                    await store.insert(
                        spec.table, spec.to_columns(chunk), spec.columns, dedup=dedup_token([e.event_id for e in chunk])
                    )
                out[name] = rows / (time.perf_counter() - t)
            return out
        finally:
            await store.close()


def main() -> None:
    results = asyncio.run(run())
    ratio = results["batched (5,000 rows/insert)"] / results["row-at-a-time"]
    machine = platform.processor() or platform.machine()
    print(f"# ClickHouse insert (chDB), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine}")
    print("| insert | rows/s |\n|---|---|")
    for name, rate in results.items():
        print(f"| {name} | {rate:,.0f} |")
    print(f"batched / row-at-a-time: {ratio:,.0f}x")
    plot.save(
        "insert",
        f"ClickHouse (chDB) insert: batched is {ratio:,.0f}x row-at-a-time",
        [plot.bars("same tick rows, same table, same Store.insert", results, "rows/s", log=True)],
        footer=plot.footer(),
    )


if __name__ == "__main__":
    main()
