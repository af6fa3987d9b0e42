"""Kafka bus client paths side by side on one broker in one run (issue 21, issue 22's latency).

Run from the repository root: ``.venv/bin/python -m bench.bus_paths`` (starts its own broker unless
TOKENPULSE_TEST_KAFKA is set). It compares this tree's ``KafkaBus`` (FastStream's broker: ``publish_batch``
and batch subscribers) with the ``KafkaBus`` of ``BENCH_COMPARE_REF`` (default ``4f0bc08``, aiokafka alone),
loaded beside it (:mod:`bench.bus_variants`), on the same 50,000 price events (100 keys):

* publish, in calls of 5,000 as the services do, until every message is acknowledged (acks=all);
* consume: a shared subscription with a no-op handler in a new consumer group, from the bus's start until
  every event was validated and handed over (a commit after every batch);
* quiet topic: one event every 150-350 ms (random), publish -> handler, every consumer on the same messages
  at once: both buses (tail subscriptions), and bare FastStream batch subscribers with FastStream's default
  ``batch_timeout_ms`` (200), the 100 the bus used before, and the bus's setting (``BENCH_QUIET_TIMEOUTS``
  to try others), beside a bare aiokafka ``getmany`` loop: what the subscriber's sleep after an empty poll
  costs;
* idle CPU: a bus with one consumer group over three quiet topics and two tail subscriptions, CPU per second
  of wall time while nothing arrives (what a short poll timeout costs).

Prints Markdown for docs/benchmarks.md. Rounds are interleaved so a slow spell of the shared VM hits both
alike; the table gives the median and every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from tokenpulse_shared.bus import Delivery
from tokenpulse_shared.bus.kafka import BATCH_TIMEOUT_MS, KafkaBus, ensure_topics
from tokenpulse_shared.events import Event, PriceEvent
from tokenpulse_shared.topics import Topic

from bench import broker
from bench.bus_variants import kafka_bus_at

N = int(os.environ.get("BENCH_EVENTS", "50000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
REF = os.environ.get("BENCH_COMPARE_REF", "4f0bc08")
QUIET_EVENTS = int(os.environ.get("BENCH_QUIET_EVENTS", "200"))
# the bare FastStream subscribers' batch_timeout_ms values on the quiet topic (FastStream's default, the bus's before)
QUIET_TIMEOUTS = {int(t) for t in os.environ.get("BENCH_QUIET_TIMEOUTS", f"200,100,{BATCH_TIMEOUT_MS}").split(",")}
CHUNK = 5000
KEYS = 100


def fresh_topic() -> Topic:
    return Topic(f"bench.paths.{uuid.uuid4().hex[:10]}", PriceEvent, "bench")


def events(n: int) -> list[PriceEvent]:
    now = datetime.now(UTC)
    return [PriceEvent(symbol=f"S{i % KEYS}", ts=now, price=1.0 + i) for i in range(n)]


async def publish_rate(cls: Any, bootstrap: str, batch: list[PriceEvent]) -> float:
    topic = fresh_topic()
    await ensure_topics(bootstrap, [topic])
    bus = cls(bootstrap, client_id="bench-publish")
    await bus.start()
    try:
        t = time.perf_counter()
        for k in range(0, len(batch), CHUNK):
            await bus.publish(topic, batch[k : k + CHUNK])
        return len(batch) / (time.perf_counter() - t)
    finally:
        await bus.stop()


async def consume_rate(cls: Any, bootstrap: str, topic: Topic, n: int) -> float:
    bus = cls(bootstrap, client_id="bench-consume", group_prefix=f"bench-{uuid.uuid4().hex[:8]}")
    seen = [0]
    done = asyncio.Event()

    async def handler(batch: list[Event]) -> None:
        seen[0] += len(batch)
        if seen[0] >= n:
            done.set()

    bus.subscribe(topic, "noop", handler, max_batch=CHUNK)
    t = time.perf_counter()
    await bus.start()
    try:
        await done.wait()
        return n / (time.perf_counter() - t)
    finally:
        await bus.stop()


def bare_faststream(broker_: KafkaBroker, topic: Topic, batch_timeout_ms: int, seen: Callable[[Any], None]) -> None:
    @broker_.subscriber(topic.name, group_id=None, batch=True, max_records=CHUNK, batch_timeout_ms=batch_timeout_ms,
                        auto_offset_reset="latest")  # fmt: skip
    async def handle(message: KafkaMessage) -> None:
        seen(message.raw_message)


async def quiet_latency(bootstrap: str, variants: dict[str, Any]) -> dict[str, list[float]]:
    """Every consumer on one topic from its end, an event every 150-350 ms: publish -> handler, ms."""
    topic = fresh_topic()
    await ensure_topics(bootstrap, [topic])
    sent: dict[str, float] = {}
    got: dict[str, list[float]] = {}

    def recorder(label: str) -> Callable[[Any], None]:
        got[label] = []

        def seen(items: Any) -> None:
            now = time.perf_counter()
            for item in items:
                symbol = item.symbol if isinstance(item, PriceEvent) else item.key.decode()
                if (t := sent.get(symbol)) is not None:
                    got[label].append((now - t) * 1000)

        return seen

    buses = []
    for label, cls in variants.items():
        bus = cls(bootstrap, client_id="bench-quiet", group_prefix=f"bench-{uuid.uuid4().hex[:8]}")
        seen = recorder(label)

        async def on_events(batch: list[Event], seen: Callable[[Any], None] = seen) -> None:
            seen(batch)

        bus.subscribe(topic, "quiet", on_events, delivery=Delivery.TAIL)
        buses.append(bus)
    fs = KafkaBroker(bootstrap, logger=None)
    for timeout_ms in sorted(QUIET_TIMEOUTS, reverse=True):
        bare_faststream(
            fs, topic, timeout_ms, recorder(f"bare FastStream batch subscriber, batch_timeout_ms={timeout_ms}")
        )
    consumer = AIOKafkaConsumer(topic.name, bootstrap_servers=bootstrap, auto_offset_reset="latest")
    loop_seen = recorder("bare aiokafka getmany loop (timeout 100 ms)")
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            for records in (await consumer.getmany(timeout_ms=100, max_records=CHUNK)).values():
                loop_seen(records)

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await asyncio.gather(*(b.start() for b in buses), fs.start(), consumer.start(), producer.start())
    task = asyncio.create_task(loop())
    try:
        await asyncio.sleep(3)  # every consumer positioned at the end
        for i in range(QUIET_EVENTS):
            event = PriceEvent(symbol=f"Q{i}", ts=datetime.now(UTC), price=1.0)
            sent[event.symbol] = time.perf_counter()
            await producer.send_and_wait(topic.name, event.model_dump_json().encode(), event.symbol.encode())
            await asyncio.sleep(random.uniform(0.15, 0.35))
        await asyncio.sleep(1)
    finally:
        stop.set()
        await task
        await asyncio.gather(*(b.stop() for b in buses), fs.stop(), consumer.stop(), producer.stop())
    return got


async def idle_cpu(cls: Any, bootstrap: str, seconds: float = 10.0) -> float:
    """CPU ms per wall second of a started bus with three consumers (a group over three topics, two tails)
    while nothing is published."""
    topics = [fresh_topic() for _ in range(3)]
    await ensure_topics(bootstrap, topics)
    bus = cls(bootstrap, client_id="bench-idle", group_prefix=f"bench-{uuid.uuid4().hex[:8]}")

    async def handler(batch: list[Event]) -> None:
        return None

    for topic in topics:
        bus.subscribe(topic, "idle", handler)
    bus.subscribe(topics[0], "idle-tail", handler, delivery=Delivery.TAIL)
    bus.subscribe(topics[1], "idle-tail", handler, delivery=Delivery.TAIL)
    await bus.start()
    try:
        await asyncio.sleep(3)  # the group joined
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        return (time.process_time() - cpu) * 1000 / (time.perf_counter() - wall)
    finally:
        await bus.stop()


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def row(label: str, runs: list[float], fmt: str = "{:,.0f}") -> str:
    return f"| {label} | {fmt.format(statistics.median(runs))} | {', '.join(fmt.format(r) for r in runs)} |"


async def run(bootstrap: str) -> None:
    variants: dict[str, Any] = {"this tree (FastStream)": KafkaBus, f"{REF} (aiokafka alone)": kafka_bus_at(REF)}
    batch = events(N)
    pub: dict[str, list[float]] = {k: [] for k in variants}
    con: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    source = fresh_topic()
    await ensure_topics(bootstrap, [source])
    producer = KafkaBus(bootstrap, client_id="bench-source")
    await producer.start()
    for k in range(0, N, CHUNK):
        await producer.publish(source, batch[k : k + CHUNK])
    await producer.stop()
    for r in range(ROUNDS):
        order = list(variants.items()) if r % 2 == 0 else list(variants.items())[::-1]
        for label, cls in order:
            pub[label].append(await publish_rate(cls, bootstrap, batch))
            con[label].append(await consume_rate(cls, bootstrap, source, N))
            cpu[label].append(await idle_cpu(cls, bootstrap))
    lat = await quiet_latency(bootstrap, variants)

    print(f"\n| publish {N:,} events, until acknowledged | events/s (median) | runs |\n|---|---|---|")
    print("\n".join(row(k, v) for k, v in pub.items()))
    print(f"\n| consume + validate + commit {N:,} events (from start) | events/s (median) | runs |\n|---|---|---|")
    print("\n".join(row(k, v) for k, v in con.items()))
    print("\n| idle, three consumers: CPU ms per second | median | runs |\n|---|---|---|")
    print("\n".join(row(k, v, "{:.1f}") for k, v in cpu.items()))
    print("\n| quiet topic, an event every 150-350 ms, publish -> handler | p50 ms | p99 ms | max ms | events |")
    print("|---|---|---|---|---|")
    for label, xs in lat.items():
        print(f"| {label} | {pct(xs, 0.5):.1f} | {pct(xs, 0.99):.1f} | {max(xs):.1f} | {len(xs)} |")


def main() -> None:
    print(
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {ROUNDS} rounds (interleaved), compared with {REF}"
    )
    print(f"load average at start: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    work = Path(tempfile.mkdtemp(prefix="tokenpulse-bench-paths-"))
    with broker.kafka(work) as bootstrap, contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(bootstrap))
    print(f"\nload average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
