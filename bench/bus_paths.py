"""Kafka client paths for the bus, side by side on one broker in one run (issue 21).

Run from the repository root: ``.venv/bin/python -m bench.bus_paths`` (starts its own broker unless
TOKENPULSE_TEST_KAFKA is set). Each option works on the same 50,000 small events (price events,
100 keys, published in calls of 5,000 as the services do), on a fresh 6-partition topic each:

* publish, until every message is acknowledged (idempotent producer, acks=all):
  FastStream per message (``broker.publish`` with a key), FastStream ``publish_batch`` per partition
  (per-message keys as ``KafkaPublishMessage``), aiokafka ``send_batch`` per partition, aiokafka per
  message (``send``);
* consume + commit, each message validated into its event, a commit after every batch of up to 5,000:
  a FastStream batch subscriber (its own parser; and with the replacement parser ``main`` used), and
  a plain aiokafka ``getmany`` loop committing the offsets it handled;
* idle latency: one event every 150-350 ms (random), publish -> handler, both consumers on the same
  messages at once (a quiet topic: the consumer's polls often come back empty).

Prints Markdown for docs/benchmarks.md. Rounds are interleaved so a slow spell of the shared VM hits
every option alike; the table gives the median and every run.
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
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from faststream.kafka import KafkaBroker, KafkaPublishMessage
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.exceptions import BatchBufferOverflowException
from faststream.middlewares import AckPolicy
from tokenpulse_shared.bus.base import RawMessage, decode_message, encode_event
from tokenpulse_shared.bus.kafka import ensure_topics
from tokenpulse_shared.events import PriceEvent
from tokenpulse_shared.topics import PRICES, Topic

from bench import broker

N = int(os.environ.get("BENCH_EVENTS", "50000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CHUNK = 5000
KEYS = 100
BATCH_BYTES = 512 * 1024
PRODUCER = {"enable_idempotence": True, "acks": "all", "linger_ms": 5, "max_batch_size": BATCH_BYTES}
Message = tuple[bytes, bytes]


def fresh_topic() -> Topic:
    return Topic(f"bench.paths.{uuid.uuid4().hex[:10]}", PriceEvent, "bench")


def messages(n: int) -> list[Message]:
    now = datetime.now(UTC)
    events = [PriceEvent(symbol=f"S{i % KEYS}", ts=now, price=1.0 + i) for i in range(n)]
    return [(encode_event(e), e.partition_key().encode()) for e in events]


def by_partition(msgs: list[Message], partitions: list[int]) -> dict[int, list[Message]]:
    partitioner = DefaultPartitioner()
    out: dict[int, list[Message]] = {}
    for value, key in msgs:
        out.setdefault(partitioner(key, partitions, partitions), []).append((value, key))
    return out


HEADERS = {"content-type": "application/json", "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
RAW_HEADERS = [(k, v.encode()) for k, v in HEADERS.items()]


async def timed(body: Callable[[], Awaitable[None]]) -> float:
    t = time.perf_counter()
    await body()
    return N / (time.perf_counter() - t)


async def publish_aiokafka_batches(bootstrap: str, topic: Topic, msgs: list[Message]) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER)  # type: ignore[arg-type]
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic.name))

        async def body() -> None:
            futures = []
            for k in range(0, len(msgs), CHUNK):
                for partition, part in by_partition(msgs[k : k + CHUNK], partitions).items():
                    batch = producer.create_batch()
                    for value, key in part:
                        if batch.append(key=key, value=value, timestamp=None, headers=RAW_HEADERS) is None:
                            batch.close()
                            futures.append(await producer.send_batch(batch, topic.name, partition=partition))
                            batch = producer.create_batch()
                            batch.append(key=key, value=value, timestamp=None, headers=RAW_HEADERS)
                    batch.close()
                    futures.append(await producer.send_batch(batch, topic.name, partition=partition))
                await asyncio.gather(*futures)

        return await timed(body)
    finally:
        await producer.stop()


async def publish_aiokafka_each(bootstrap: str, topic: Topic, msgs: list[Message]) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER)  # type: ignore[arg-type]
    await producer.start()
    try:
        await producer.partitions_for(topic.name)

        async def body() -> None:
            for k in range(0, len(msgs), CHUNK):
                futures = [
                    await producer.send(topic.name, value, key, headers=RAW_HEADERS)
                    for value, key in msgs[k : k + CHUNK]
                ]
                await asyncio.gather(*futures)

        return await timed(body)
    finally:
        await producer.stop()


async def faststream_broker(bootstrap: str) -> KafkaBroker:
    fs = KafkaBroker(bootstrap, logger=None, **PRODUCER)  # type: ignore[arg-type]
    await fs.start()
    return fs


async def publish_faststream_each(bootstrap: str, topic: Topic, msgs: list[Message]) -> float:
    fs = await faststream_broker(bootstrap)
    try:

        async def body() -> None:
            for k in range(0, len(msgs), CHUNK):
                futures = [
                    await fs.publish(value, topic.name, key=key, headers=HEADERS, no_confirm=True)
                    for value, key in msgs[k : k + CHUNK]
                ]
                await asyncio.gather(*futures)

        return await timed(body)
    finally:
        await fs.stop()


async def publish_faststream_batches(bootstrap: str, topic: Topic, msgs: list[Message]) -> float:
    """FastStream's batch API sends one batch to one partition: the keys must be mapped to partitions first
    (aiokafka's partitioner, as the producer would), and a batch over the size limit split by hand."""
    fs = await faststream_broker(bootstrap)
    probe = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await probe.start()
    partitions = sorted(await probe.partitions_for(topic.name))
    await probe.stop()
    try:

        async def send(partition: int, part: list[Message]) -> list[Any]:
            futures = []
            rest = [KafkaPublishMessage(value, key=key) for value, key in part]
            while rest:
                try:
                    futures.append(
                        await fs.publish_batch(
                            *rest, topic=topic.name, partition=partition, headers=HEADERS, no_confirm=True
                        )
                    )
                    rest = []
                except BatchBufferOverflowException as exc:
                    head, rest = rest[: exc.message_position], rest[exc.message_position :]
                    futures.append(
                        await fs.publish_batch(
                            *head, topic=topic.name, partition=partition, headers=HEADERS, no_confirm=True
                        )
                    )
            return futures

        async def body() -> None:
            for k in range(0, len(msgs), CHUNK):
                futures = []
                for partition, part in by_partition(msgs[k : k + CHUNK], partitions).items():
                    futures += await send(partition, part)
                await asyncio.gather(*futures)

        return await timed(body)
    finally:
        await fs.stop()


def validate(records: Any) -> int:
    for r in records:
        decode_message(PRICES, RawMessage(value=r.value))
    return len(records)


async def consume_aiokafka(bootstrap: str, topic: Topic) -> float:
    consumer = AIOKafkaConsumer(
        topic.name,
        bootstrap_servers=bootstrap,
        group_id=f"bench-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        heartbeat_interval_ms=1000,
    )
    t = time.perf_counter()
    await consumer.start()
    seen = 0
    try:
        while seen < N:
            batch = await consumer.getmany(timeout_ms=100, max_records=CHUNK)
            offsets = {}
            for tp, records in batch.items():
                seen += validate(records)
                offsets[tp] = records[-1].offset + 1
            if offsets:
                await consumer.commit(offsets)
    finally:
        await consumer.stop()
    return N / (time.perf_counter() - t)


async def _raw_decoder(msg: Any) -> Any:
    return None


async def _first_record_parser(records: Any, original: Any) -> Any:
    """``main``'s replacement batch parser: parse the first record only, then hand over the whole batch."""
    if not isinstance(records, tuple) or len(records) <= 1:
        return await original(records)
    message = await original(records[:1])
    message.raw_message = records
    message.body = [r.value or b"" for r in records]
    return message


async def consume_faststream(bootstrap: str, topic: Topic, *, replace_parser: bool) -> float:
    fs = KafkaBroker(bootstrap, logger=None)
    seen = [0]
    done = asyncio.Event()
    subscriber = fs.subscriber(
        topic.name,
        group_id=f"bench-{uuid.uuid4().hex[:8]}",
        batch=True,
        max_records=CHUNK,
        batch_timeout_ms=100,
        heartbeat_interval_ms=1000,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=_raw_decoder,
        **({"parser": _first_record_parser} if replace_parser else {}),
    )

    @subscriber
    async def handle(message: KafkaMessage) -> None:
        records = message.raw_message if isinstance(message.raw_message, tuple) else (message.raw_message,)
        seen[0] += validate(records)
        if seen[0] >= N:
            done.set()

    t = time.perf_counter()
    await fs.start()
    try:
        await done.wait()
        return N / (time.perf_counter() - t)
    finally:
        await fs.stop()


async def idle_latency(bootstrap: str, count: int = 100) -> dict[str, list[float]]:
    """Both consumers on one topic (no group, from its end), an event every 150-350 ms: publish -> handler."""
    topic = fresh_topic()
    await ensure_topics(bootstrap, [topic])
    got: dict[str, list[float]] = {"faststream batch subscriber": [], "aiokafka getmany loop": []}
    sent: dict[str, float] = {}

    def seen(label: str, records: Any) -> None:
        now = time.perf_counter()
        for r in records:
            if (t := sent.get(r.key.decode())) is not None:
                got[label].append((now - t) * 1000)

    fs = KafkaBroker(bootstrap, logger=None)

    @fs.subscriber(topic.name, group_id=None, batch=True, max_records=CHUNK, batch_timeout_ms=100,
                   auto_offset_reset="latest", decoder=_raw_decoder)  # fmt: skip
    async def handle(message: KafkaMessage) -> None:
        seen("faststream batch subscriber", message.raw_message)

    consumer = AIOKafkaConsumer(topic.name, bootstrap_servers=bootstrap, auto_offset_reset="latest")
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=CHUNK)
            for records in batch.values():
                seen("aiokafka getmany loop", records)

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER)  # type: ignore[arg-type]
    await asyncio.gather(fs.start(), consumer.start(), producer.start())
    task = asyncio.create_task(loop())
    try:
        await asyncio.sleep(3)  # both positioned at the end
        for i in range(count):
            key = f"L{i}"
            sent[key] = time.perf_counter()
            await producer.send_and_wait(topic.name, b"{}", key.encode())
            await asyncio.sleep(random.uniform(0.15, 0.35))
        await asyncio.sleep(1)
    finally:
        stop.set()
        await task
        await asyncio.gather(fs.stop(), consumer.stop(), producer.stop())
    return got


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


async def run(bootstrap: str) -> None:
    msgs = messages(N)
    publishers: dict[str, Callable[[str, Topic, list[Message]], Awaitable[float]]] = {
        "FastStream `publish` per message": publish_faststream_each,
        "FastStream `publish_batch` per partition": publish_faststream_batches,
        "aiokafka `send_batch` per partition": publish_aiokafka_batches,
        "aiokafka `send` per message": publish_aiokafka_each,
    }
    consumers: dict[str, Callable[[str, Topic], Awaitable[float]]] = {
        "FastStream batch subscriber, its own parser": lambda b, t: consume_faststream(b, t, replace_parser=False),
        "FastStream batch subscriber, `main`'s replacement parser": lambda b, t: consume_faststream(
            b, t, replace_parser=True
        ),
        "aiokafka `getmany` loop, commit of handled offsets": consume_aiokafka,
    }
    pub: dict[str, list[float]] = {k: [] for k in publishers}
    con: dict[str, list[float]] = {k: [] for k in consumers}
    for _ in range(ROUNDS):
        source = fresh_topic()
        for label, publish in publishers.items():
            topic = fresh_topic()
            await ensure_topics(bootstrap, [topic])
            pub[label].append(await publish(bootstrap, topic, msgs))
        await ensure_topics(bootstrap, [source])
        await publish_aiokafka_batches(bootstrap, source, msgs)
        for label, consume in consumers.items():
            con[label].append(await consume(bootstrap, source))
    lat = await idle_latency(bootstrap)

    def row(label: str, runs: list[float]) -> str:
        return f"| {label} | {statistics.median(runs):,.0f} | {', '.join(f'{r:,.0f}' for r in runs)} |"

    print(f"\n| publish {N:,} events, until acknowledged | events/s (median) | runs |\n|---|---|---|")
    print("\n".join(row(k, v) for k, v in pub.items()))
    print(f"\n| consume + validate + commit {N:,} events | events/s (median) | runs |\n|---|---|---|")
    print("\n".join(row(k, v) for k, v in con.items()))
    print("\n| quiet topic, an event every 150-350 ms, publish -> handler | p50 ms | p99 ms | events |")
    print("|---|---|---|---|")
    for label, xs in lat.items():
        print(f"| {label} | {pct(xs, 0.5):.1f} | {pct(xs, 0.99):.1f} | {len(xs)} |")


def main() -> None:
    print(
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {ROUNDS} rounds (interleaved)"
    )
    print(f"load average at start: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    work = Path(tempfile.mkdtemp(prefix="tokenpulse-bench-paths-"))
    with broker.kafka(work) as bootstrap, contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(bootstrap))
    print(f"\nload average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
