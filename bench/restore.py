"""Ingest's rebuild after a restart or takeover: the ticks topic read back up to the group's commit, streamed
through the builder, against the whole read held in memory as events (the path before), side by side.

``--ticks`` trades of 1,000 tokens (Zipf over the ranks) go on ``tokenpulse.ticks.v2`` as row batches of
5,000, as ingest's feeds publish them, on a fresh broker; a consumer group commits at the end. Each variant
then runs in a process of its own (so its peak RSS is its own): **streamed** is what
:meth:`IngestService.restore` runs (``read_log_chunks`` of both ticks topics merged by time, rows counted
straight into the builder and the reconciler, candles kept only while needed); **whole read** is the
earlier path (``read_log``, every row turned into a ``TickEvent``, then ``CandleBuilder.restore``);
**checkpointed** is a restart at the same position with checkpoints: while publishing, the ticks up to
``--after`` before the end are also counted into a builder, whose checkpoint (one per partition, as ingest
writes them) goes on ``tokenpulse.ingest-checkpoints.v1``; the variant reads the checkpoints back, loads them
and replays only the ticks after their offsets (``tokenpulse_ingest/checkpoint.py``, as
:meth:`IngestService.restore` does).

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
from tokenpulse_ingest import checkpoint
from tokenpulse_ingest.candles import CandleBuilder
from tokenpulse_ingest.prices import PriceReconciler
from tokenpulse_ingest.replay import by_time, replay
from tokenpulse_shared.batches import TickBatch
from tokenpulse_shared.bus.base import LogRange, Rejected
from tokenpulse_shared.bus.kafka import KafkaBus
from tokenpulse_shared.events import Side
from tokenpulse_shared.topics import INGEST_CHECKPOINTS, TICKS, TICKS_V2

from bench.broker import kafka

GROUP = "restore-bench"
ROWS = 5000
VARIANTS = ("streamed", "whole read", "checkpointed")


async def publish(bootstrap: str, n: int, after: int) -> int:
    """``n`` trades of 1,000 tokens on ticks.v2, a checkpoint of each partition ``after`` trades before the end,
    then the group's commit at the end; returns since_ms."""
    rng = random.Random(1)
    symbols = [f"R{i:04d}" for i in range(1000)]
    weights = [1 / (rank + 1) for rank in range(1000)]
    since_ms = int(time.time() * 1000) - 1000
    t0 = int(time.time() * 1e6) - n * 100
    bus = KafkaBus(bootstrap, client_id="restore-bench")
    await bus.start()
    builder, reconciler = CandleBuilder(), PriceReconciler()
    for at in range(0, n, ROWS):
        if at == n - after:
            await write_checkpoints(bus, builder, reconciler)
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
        if at < n - after:
            builder.add_batch(batch, wall=time.time())
            reconciler.update_batch(batch, wall=time.time())
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


async def write_checkpoints(bus: KafkaBus, builder: CandleBuilder, reconciler: PriceReconciler) -> None:
    """Each partition's state and the end offsets of both ticks topics now, as ingest writes a checkpoint."""
    place = await bus._row_placer(TICKS_V2)
    ends = {}
    for topic in (TICKS, TICKS_V2):
        consumer = AIOKafkaConsumer(bootstrap_servers=bus.bootstrap)
        await consumer.start()
        parts = [TopicPartition(topic.name, p) for p in await bus._partitions(topic.name)]
        ends[topic.name] = {tp.partition: offset for tp, offset in (await consumer.end_offsets(parts)).items()}
        await consumer.stop()
    symbols: dict[int, set[str]] = {}
    for symbol in builder.symbols():
        symbols.setdefault(place(symbol), set()).add(symbol)
    for p in ends[TICKS_V2.name]:
        state = checkpoint.take(builder, reconciler, symbols.get(p, set()))
        offsets = {topic: at[p] for topic, at in ends.items()}
        await bus.publish(INGEST_CHECKPOINTS, checkpoint.to_messages(bus.group_id(GROUP), p, offsets, state))


async def checkpointed(
    bus: KafkaBus, builder: CandleBuilder, reconciler: PriceReconciler, since_ms: int, took: dict[str, float]
) -> int:
    """Load each partition's newest checkpoint, then replay the ticks after its offsets up to the commit; ``took``
    gets the seconds to read and load the checkpoints and their size."""
    started = time.perf_counter()
    committed = {t.name: await bus.committed_offsets(GROUP, t) for t in (TICKS, TICKS_V2)}
    partitions = await bus._partitions(TICKS_V2.name)
    rejected: list[Rejected] = []
    messages = [m async for chunk in bus.read_log_chunks(INGEST_CHECKPOINTS, LogRange(), rejected) for m in chunk]
    unreadable = [r.message.key or "" for r in rejected]
    found, refused = checkpoint.newest(messages, unreadable, bus.group_id(GROUP), committed, partitions)
    assert not refused, refused
    for cp in found.values():
        checkpoint.load(builder, reconciler, cp, time.time())
    took["checkpoint_s"] = time.perf_counter() - started
    took["checkpoint_mb"] = sum(len(m.model_dump_json()) for m in messages) / 1e6
    starts = {t: {p: cp.offsets[t] for p, cp in found.items()} for t in committed}
    logs = [
        bus.read_log_chunks(t, LogRange(since_ms, until_group=GROUP, from_offsets=starts[t.name]))
        for t in (TICKS, TICKS_V2)
    ]
    counted = 0
    async for chunk in by_time(logs):
        counted += replay(builder, reconciler, chunk, lambda s: True, time.time())  # type: ignore[arg-type]
    return counted


async def restore(bootstrap: str, since_ms: int, variant: str) -> dict[str, float]:
    """One variant's rebuild; what it took."""
    bus = KafkaBus(bootstrap, client_id="restore-bench")
    builder, reconciler = CandleBuilder(), PriceReconciler()
    started, cpu = time.perf_counter(), time.process_time()
    took: dict[str, float] = {}
    if variant == "checkpointed":
        counted = await checkpointed(bus, builder, reconciler, since_ms, took)
    elif variant == "streamed":
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
        **took,
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
    parser.add_argument(
        "--after", type=int, default=300_000, help="trades after the checkpoints (30 s at 10,000 ticks/s)"
    )
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--since", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # one variant, in a process of its own
        print(json.dumps(asyncio.run(restore(args.bootstrap, args.since, args.variant))))
        return
    print(f"run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp, kafka(Path(tmp), fresh=True) as bootstrap:
        since_ms = asyncio.run(publish(bootstrap, args.ticks, args.after - args.after % ROWS))
        print("| variant | ticks | seconds | ticks/s | CPU s | peak RSS MB | RSS per tick |")
        print("|---|---|---|---|---|---|---|")
        for variant in VARIANTS:
            r = run_variant(bootstrap, since_ms, variant)
            print(
                f"| {variant} | {r['ticks']:,.0f} | {r['seconds']:.1f} | {r['ticks_per_s']:,.0f} | {r['cpu_s']:.1f} "
                f"| {r['peak_rss_mb']:,.0f} | {r['peak_rss_mb'] * 1e6 / r['ticks']:,.0f} B |"
            )
            if "checkpoint_s" in r:
                print(f"checkpoints: {r['checkpoint_mb']:.1f} MB read and loaded in {r['checkpoint_s']:.1f} s")


if __name__ == "__main__":
    main()
