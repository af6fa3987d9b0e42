"""Looking at a real broker from a test: consumer-group lag and whole topics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from tokenpulse_shared.bus.kafka import KafkaBus
from tokenpulse_shared.events import Event
from tokenpulse_shared.topics import Topic


async def lag(bootstrap: str, groups: dict[str, Iterable[Topic]]) -> dict[str, int]:
    """Messages not yet committed by each consumer group on its topics (0 = caught up).

    Committed offsets are read before the end offsets: a handler publishes its outputs before its
    batch is committed, so "every group at 0" means nothing is in flight between them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="test-lag")
    await admin.start()
    committed: dict[str, dict[TopicPartition, int]] = {}
    partitions: dict[str, list[int]] = {}
    try:
        for group in groups:
            offsets = await admin.list_consumer_group_offsets(group)
            committed[group] = {tp: meta.offset for tp, meta in offsets.items()}
        names = sorted({t.name for topics in groups.values() for t in topics})
        for d in await admin.describe_topics(names):
            partitions[d["topic"]] = sorted(p["partition"] for p in d["partitions"])
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id="test-lag", enable_auto_commit=False)
    await consumer.start()
    try:
        out: dict[str, int] = {}
        for group, topics in groups.items():
            tps = [TopicPartition(t.name, p) for t in topics for p in partitions[t.name]]
            assert tps, f"no partitions for {[t.name for t in topics]}"
            end = await consumer.end_offsets(tps)
            out[group] = sum(max(0, end[tp] - max(committed[group].get(tp, 0), 0)) for tp in tps)
        return out
    finally:
        await consumer.stop()


def wait_caught_up(bootstrap: str, groups: dict[str, Iterable[Topic]], timeout: float = 120.0) -> None:
    """Block until every group has committed everything on its topics (checked twice in a row)."""
    import time

    deadline = time.monotonic() + timeout
    last: dict[str, int] = {}
    streak = 0
    while time.monotonic() < deadline:
        last = asyncio.run(lag(bootstrap, groups))
        streak = streak + 1 if not any(last.values()) else 0
        if streak >= 2:
            return
        time.sleep(1.0)
    raise AssertionError(f"consumer groups did not catch up within {timeout:.0f}s: {last}")


async def read_topic(bootstrap: str, topic: Topic) -> list[Event]:
    """Every valid event on ``topic`` up to its current end."""
    bus = KafkaBus(bootstrap, client_id="test-reader")
    return await bus.read_log(topic)
