"""Ingest's rebuild after a restart or takeover: the ticks topic read back up to the group's commit, streamed
through the builder, against the whole read held in memory as events (the path before), side by side.

``--ticks`` trades of 1,000 tokens (Zipf over the ranks) go on ``tokenpulse.ticks.v2`` as row batches of
5,000, as ingest's feeds publish them, on a fresh broker; a consumer group commits at the end. Each variant
then runs in a process of its own (so its peak RSS is its own): **streamed** is what
:meth:`IngestService.restore` runs (``read_log_chunks`` of both ticks topics merged by time, rows counted
straight into the builder and the reconciler, candles kept only while needed); **whole read** is the
earlier path (``read_log``, every row turned into a ``TickEvent``, then ``CandleBuilder.restore``).

Run: ``.venv/bin/python -m bench.restore --ticks 2000000`` (``make bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from tokenpulse_ingest.candles import CandleBuilder
from tokenpulse_ingest.prices import PriceReconciler
from tokenpulse_ingest.replay import by_time, replay
from tokenpulse_shared.batches import TickBatch
from tokenpulse_shared.bus.base import LogRange
from tokenpulse_shared.bus.kafka import KafkaBus
from tokenpulse_shared.events import Side
from tokenpulse_shared.topics import TICKS, TICKS_V2

from bench.broker import kafka

GROUP = "restore-bench"
ROWS = 5000
VARIANTS = ("streamed", "whole read")


async def publish(bootstrap: str, n: int) -> int:
    """``n`` trades of 1,000 tokens on ticks.v2, then the group's commit at the end; returns since_ms."""
    rng = random.Random(1)
    symbols = [f"R{i:04d}" for i in range(1000)]
    weights = [1 / (rank + 1) for rank in range(1000)]
    since_ms = int(time.time() * 1000) - 1000
    t0 = int(time.time() * 1e6) - n * 100
    bus = KafkaBus(bootstrap, client_id="restore-bench")
    await bus.start()
    for at in range(0, n, ROWS):
        k = min(ROWS, n - at)
        batch = TickBatch(
            event_id=f"restore-bench-{at}",
            produced_at=datetime.now(UTC),
            symbol=rng.choices(symbols, weights, k=k),
            source=["binance"] * k,
            ts_us=[t0 + (at + i) * 100 for i in range(k)],
            price=[100 + rng.random() for _ in range(k)],
            size=[0.01 + rng.random() for _ in range(k)],
            side=[Side.BUY] * k,
            trade_id=[str(at + i) for i in range(k)],
            quote=["USDT"] * k,
        )
        await bus.publish_rows(TICKS_V2, batch, linger=False)
    partitions = await bus._partitions(TICKS_V2.name)
    await bus.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=bus.group_id(GROUP), enable_auto_commit=False)
    await consumer.start()
    parts = [TopicPartition(TICKS_V2.name, p) for p in partitions]
    consumer.assign(parts)
    ends = await consumer.end_offsets(parts)
    await consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in ends.items()})
    await consumer.stop()
    return since_ms


async def restore(bootstrap: str, since_ms: int, variant: str) -> dict[str, float]:
    """One variant's rebuild; what it took."""
    bus = KafkaBus(bootstrap, client_id="restore-bench")
    builder, reconciler = CandleBuilder(), PriceReconciler()
    started, cpu = time.perf_counter(), time.process_time()
    if variant == "streamed":
        logs = [bus.read_log_chunks(t, LogRange(since_ms, until_group=GROUP)) for t in (TICKS, TICKS_V2)]
        counted = 0
        async for chunk in by_time(logs):
            counted += replay(builder, reconciler, chunk, lambda s: True, time.time())  # type: ignore[arg-type]
    else:
        messages = [m for t in (TICKS, TICKS_V2) for m in await bus.read_log(t, since_ms=since_ms, until_group=GROUP)]
        messages.sort(key=lambda m: m.produced_at)
        ticks = [t for m in messages for t in (m.to_events() if isinstance(m, TickBatch) else [m])]
        counted = builder.restore(ticks).ticks
        reconciler.replay(ticks)  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    return {
        "ticks": counted,
        "seconds": seconds,
        "cpu_s": time.process_time() - cpu,
        "ticks_per_s": counted / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_variant(bootstrap: str, since_ms: int, variant: str) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.restore",
            "--variant",
            variant,
            "--bootstrap",
            bootstrap,
            "--since",
            str(since_ms),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=2_000_000, help="trades published, then read back")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--since", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # one variant, in a process of its own
        print(json.dumps(asyncio.run(restore(args.bootstrap, args.since, args.variant))))
        return
    print(f"run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp, kafka(Path(tmp), fresh=True) as bootstrap:
        since_ms = asyncio.run(publish(bootstrap, args.ticks))
        print("| variant | ticks | seconds | ticks/s | CPU s | peak RSS MB | RSS per tick |")
        print("|---|---|---|---|---|---|---|")
        for variant in VARIANTS:
            r = run_variant(bootstrap, since_ms, variant)
            print(
                f"| {variant} | {r['ticks']:,.0f} | {r['seconds']:.1f} | {r['ticks_per_s']:,.0f} | {r['cpu_s']:.1f} "
                f"| {r['peak_rss_mb']:,.0f} | {r['peak_rss_mb'] * 1e6 / r['ticks']:,.0f} B |"
            )


if __name__ == "__main__":
    main()
