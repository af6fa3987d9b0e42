"""What only the Kafka adapter does, against the real broker: consumers per group, rebalances, graceful
stop, lag, placement by key. The behaviours both adapters share are in tests/contract/."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import REGISTRY
from tokenpulse_shared.batches import INDICATOR_NAMES, IndicatorBatch, TickBatch
from tokenpulse_shared.bus import Delivery, TransientError
from tokenpulse_shared.bus.base import encode_event
from tokenpulse_shared.bus.kafka import PRODUCER_BATCH_BYTES, KafkaBus, _KeyPartitions, ensure_topics
from tokenpulse_shared.events import Event, Interval, PriceEvent, TickEvent
from tokenpulse_shared.topics import PRICES, SIGNALS, TICKS, Topic

from tests.contract.bus import wait_for

pytestmark = pytest.mark.kafka
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def price(symbol: str, i: int) -> PriceEvent:
    return PriceEvent(symbol=symbol, ts=T0.replace(minute=i % 60, hour=i // 60 % 24), price=float(i + 1))


async def fresh_topic(bootstrap: str) -> Topic:
    """A topic of this test alone (6 partitions), so counts and offsets are exact."""
    topic = Topic(f"test.bus.{uuid.uuid4().hex[:10]}", PriceEvent, "test")
    await ensure_topics(bootstrap, [topic])
    return topic


def new_bus(bootstrap: str, prefix: str, **kw: object) -> KafkaBus:
    return KafkaBus(bootstrap, group_prefix=prefix, backoff_s=0.01, **kw)  # type: ignore[arg-type]


def test_a_groups_shared_topics_are_one_consumer_and_the_rest_one_each() -> None:
    """One member per service joins the group (no rebalance per topic); a topic subscribed twice in one
    group is a second member; broadcast and tail subscriptions read without a group, each on its own."""
    bus = KafkaBus("unused:9092")

    async def handler(events: list[Event]) -> None:
        return None

    bus.subscribe(PRICES, "multi", handler)
    bus.subscribe(TICKS, "multi", handler)
    bus.subscribe(SIGNALS, "multi", handler, delivery=Delivery.TAIL)
    bus.subscribe(PRICES, "multi", handler)
    bus.subscribe(SIGNALS, "other", handler)
    assert [[s.topic for s in c] for c in bus._consumers()] == [[PRICES, TICKS], [SIGNALS], [PRICES], [SIGNALS]]


def test_the_key_partition_cache_follows_the_topics_partitions() -> None:
    partitioner = DefaultPartitioner()
    keys = _KeyPartitions(partitioner)
    names = [f"K{i}".encode() for i in range(200)]
    three = keys.of("t", [0, 1, 2])
    assert [three(k) for k in names] == [partitioner(k, [0, 1, 2], [0, 1, 2]) for k in names]
    six = keys.of("t", [0, 1, 2, 3, 4, 5])  # partitions added: every key mapped again
    assert [six(k) for k in names] == [partitioner(k, list(range(6)), list(range(6))) for k in names]


# Kafka's own murmur2 test vectors (the Java client's UtilsTest.testMurmur2): key -> signed 32-bit hash
JAVA_MURMUR2 = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}


def test_keys_are_placed_as_the_java_client_places_them() -> None:
    """Java's default partitioner: toPositive(murmur2(key)) % partitions; other producers of the same keys
    (a user's own feed handler, Kafka Connect) put a token on the same partition as we do."""
    partition = _KeyPartitions(DefaultPartitioner()).of("t", list(range(6)))
    for key, java_hash in JAVA_MURMUR2.items():
        assert partition(key.encode()) == (java_hash & 0x7FFFFFFF) % 6, key


async def test_a_key_lands_on_the_partition_the_java_client_would_pick_in_order(kafka_bootstrap: str) -> None:
    """key = partition key, placed by murmur2 as every Kafka client does, so other producers of the same
    keys (a user's own feed) keep one token on one partition; publishing order holds per key."""
    topic = await fresh_topic(kafka_bootstrap)
    bus = new_bus(kafka_bootstrap, "place")
    syms = [f"P{i}" for i in range(30)]
    await bus.start()
    try:
        for i in range(0, 10, 5):
            await bus.publish(topic, [price(s, j) for j in range(i, i + 5) for s in syms])
    finally:
        await bus.stop()
    reader = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    await reader.start()
    try:
        tps = [TopicPartition(topic.name, p) for p in range(6)]
        reader.assign(tps)
        seen: dict[str, list[tuple[int, float]]] = {}
        while sum(len(v) for v in seen.values()) < 300:
            for tp, records in (await reader.getmany(timeout_ms=1000)).items():
                for r in records:
                    event = PriceEvent.model_validate_json(r.value)
                    assert r.key == event.symbol.encode()
                    seen.setdefault(event.symbol, []).append((tp.partition, event.price))
    finally:
        await reader.stop()
    for s in syms:
        assert {p for p, _ in seen[s]} == {DefaultPartitioner()(s.encode(), list(range(6)), [])}
        assert [x for _, x in seen[s]] == [float(i + 1) for i in range(10)]


async def test_a_rebalance_waits_for_the_batch_in_hand_when_asked_to(kafka_bootstrap: str) -> None:
    """The store writer's way: a second replica joins while the first is in a long batch; the batch is
    finished and committed before the partitions move, so nothing is handled twice."""
    topic = await fresh_topic(kafka_bootstrap)
    prefix = f"finish-{uuid.uuid4().hex[:8]}"
    first, second = new_bus(kafka_bootstrap, prefix, graceful_timeout_s=15), new_bus(kafka_bootstrap, prefix)
    handled: list[str] = []
    in_batch = asyncio.Event()

    async def slow(events: list[Event]) -> None:
        if not in_batch.is_set():
            in_batch.set()
            await asyncio.sleep(4.0)  # longer than a rebalance waits otherwise
        handled.extend(e.event_id for e in events)

    async def fast(events: list[Event]) -> None:
        handled.extend(e.event_id for e in events)

    first.subscribe(topic, "writer", slow, finish_batch_on_rebalance=True)
    second.subscribe(topic, "writer", fast, finish_batch_on_rebalance=True)
    events = [price(f"R{k}", i) for i in range(10) for k in range(30)]
    try:
        await first.start()
        await first.publish(topic, events)
        await wait_for(in_batch.is_set)
        await second.start()  # joins: the group rebalances while the first is in its batch
        await wait_for(lambda: set(handled) >= {e.event_id for e in events})
        await asyncio.sleep(3.0)  # anything redelivered would arrive now
    finally:
        await asyncio.gather(first.stop(), second.stop())
    assert sorted(handled) == sorted(e.event_id for e in events)


async def test_graceful_stop_finishes_and_commits_the_batch_in_hand(kafka_bootstrap: str) -> None:
    topic = await fresh_topic(kafka_bootstrap)
    prefix = f"stop-{uuid.uuid4().hex[:8]}"
    first, after = new_bus(kafka_bootstrap, prefix), new_bus(kafka_bootstrap, prefix)
    handled: list[str] = []
    in_batch = asyncio.Event()

    async def slow(events: list[Event]) -> None:
        in_batch.set()
        await asyncio.sleep(1.0)
        handled.extend(e.event_id for e in events)

    async def fast(events: list[Event]) -> None:
        handled.extend(e.event_id for e in events)

    first.subscribe(topic, "g", slow)
    after.subscribe(topic, "g", fast)
    events = [price(f"G{k}", i) for i in range(10) for k in range(10)]
    try:
        await first.start()
        await first.publish(topic, events)
        await wait_for(in_batch.is_set)
        await first.stop_consuming()  # returns once the batch in hand is handled and committed
        in_hand = len(handled)
        assert in_hand > 0
        await after.start()  # the same group, restarted: continues after what was committed
        await wait_for(lambda: set(handled) >= {e.event_id for e in events})
        await asyncio.sleep(2.0)
    finally:
        await asyncio.gather(first.stop(), after.stop())
    assert sorted(handled) == sorted(e.event_id for e in events)


async def test_consumer_lag_is_measured_per_partition_and_ends_at_zero(kafka_bootstrap: str) -> None:
    topic = await fresh_topic(kafka_bootstrap)
    bus = new_bus(kafka_bootstrap, f"lag-{uuid.uuid4().hex[:8]}")
    events = [price(f"L{k}", i) for i in range(100) for k in range(30)]
    lags: list[float] = []
    count = 0

    def lag(partition: int) -> float | None:
        labels = {"group": "lagging", "topic": topic.name, "partition": str(partition)}
        return REGISTRY.get_sample_value("tokenpulse_consumer_lag", labels)

    async def handler(batch: list[Event]) -> None:
        nonlocal count
        lags.extend(v for p in range(6) if (v := lag(p)) is not None)
        count += len(batch)

    bus.subscribe(topic, "lagging", handler, max_batch=200)
    publisher = new_bus(kafka_bootstrap, "lag-publisher")
    await publisher.start()
    try:
        await publisher.publish(topic, events)  # all of it waits before the consumer starts
        await bus.start()
        await wait_for(lambda: count >= len(events))
    finally:
        await asyncio.gather(bus.stop(), publisher.stop())
    assert max(lags) > 200  # behind at the first batches
    assert [lag(p) for p in range(6)] == [0.0] * 6  # caught up at the last


async def test_a_header_that_is_not_utf8_does_not_lose_its_batch(kafka_bootstrap: str) -> None:
    """Another producer's header bytes (not UTF-8, or no value at all) are no reason to drop the batch they
    arrive in: every event of it reaches the handler."""
    topic = await fresh_topic(kafka_bootstrap)
    bus = new_bus(kafka_bootstrap, f"headers-{uuid.uuid4().hex[:8]}")
    handled: list[str] = []

    async def handler(events: list[Event]) -> None:
        handled.extend(e.event_id for e in events)

    bus.subscribe(topic, "g", handler)
    events = [price("H", i) for i in range(5)]
    odd_headers = {1: [("x-binary", b"\xff\xfe\x00")], 3: [("x-empty", None)]}
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for i, e in enumerate(events):  # one key: one partition, one fetched batch
            headers = odd_headers.get(i, [("content-type", b"application/json")])
            await producer.send(topic.name, e.model_dump_json().encode(), b"H", headers=headers)
        await producer.flush()
        await bus.start()
        await wait_for(lambda: len(handled) >= len(events), timeout=30)
    finally:
        await asyncio.gather(bus.stop(), producer.stop())
    assert sorted(handled) == sorted(e.event_id for e in events)


async def test_a_transient_error_rewinds_its_topics_part_of_a_batch_holding_both(kafka_bootstrap: str) -> None:
    """Two topics of one group in one fetched batch (both published before the consumer starts): the second
    topic's handler fails transiently; the first topic's part is committed, never handed over again."""
    first, second = await fresh_topic(kafka_bootstrap), await fresh_topic(kafka_bootstrap)
    bus = new_bus(kafka_bootstrap, f"parts-{uuid.uuid4().hex[:8]}")
    seen: dict[str, list[str]] = {first.name: [], second.name: []}
    failures = 0

    async def on_first(events: list[Event]) -> None:
        seen[first.name].extend(e.event_id for e in events)

    async def on_second(events: list[Event]) -> None:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise TransientError("downstream unavailable")
        seen[second.name].extend(e.event_id for e in events)

    bus.subscribe(first, "parts", on_first)
    bus.subscribe(second, "parts", on_second)
    one, two = [price("A", i) for i in range(20)], [price("B", i) for i in range(20)]
    publisher = new_bus(kafka_bootstrap, "parts-publisher")
    try:
        await publisher.start()
        await publisher.publish(first, one)
        await publisher.publish(second, two)
        await bus.start()
        await wait_for(lambda: len(seen[second.name]) >= len(two))
        await asyncio.sleep(2.0)  # anything handed over again would arrive now
    finally:
        await asyncio.gather(bus.stop(), publisher.stop())
    assert failures == 2
    assert sorted(seen[first.name]) == sorted(e.event_id for e in one)  # each once
    assert sorted(seen[second.name]) == sorted(e.event_id for e in two)


async def test_batch_rows_go_keyless_to_the_partition_a_keyed_message_of_their_token_goes(
    kafka_bootstrap: str,
) -> None:
    """A v2 batch holds the rows of one partition, sent there without a key, placed by murmur2 of the symbol."""
    topic = Topic(f"test.rows.{uuid.uuid4().hex[:10]}", TickBatch, "test")
    await ensure_topics(kafka_bootstrap, [topic])
    bus = new_bus(kafka_bootstrap, "rows")
    syms = [f"R{i}" for i in range(40)]
    ticks = [TickEvent(symbol=s, source="t", ts=T0, price=1.0 + i, trade_id=f"{s}-{i}") for i in range(3) for s in syms]
    await bus.start()
    try:
        await bus.publish_rows(topic, TickBatch.from_events(ticks))
    finally:
        await bus.stop()
    reader = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    await reader.start()
    rows: dict[str, set[int]] = {}
    messages = 0
    try:
        reader.assign([TopicPartition(topic.name, p) for p in range(6)])
        while sum(len(v) for v in rows.values()) < len(ticks) or sum(map(len, rows.values())) == 0:
            for tp, records in (await reader.getmany(timeout_ms=1000)).items():
                for r in records:
                    assert r.key is None
                    messages += 1
                    for s in TickBatch.model_validate_json(r.value).symbol:
                        rows.setdefault(s, set()).add(tp.partition)
            if sum(len(v) for v in rows.values()) >= len(syms):
                break
    finally:
        await reader.stop()
    assert messages <= 6  # one message per partition
    for s in syms:
        assert rows[s] == {DefaultPartitioner()(s.encode(), list(range(6)), [])}, s


async def test_rows_too_many_for_one_message_go_as_several_in_order(kafka_bootstrap: str) -> None:
    """10,000 indicator rows of one token encode to ~2.5 MB, over the broker's 1 MB message limit: they go out as
    several messages of that partition, each within the producer's batch size, every row once and in order (a
    backfill's chunk scored at once). The first rows are short (indicators warming up, null), as in a real series:
    the messages are sized by the rows' real length, not by the first rows'."""
    topic = Topic(f"test.bigrows.{uuid.uuid4().hex[:10]}", IndicatorBatch, "test")
    await ensure_topics(kafka_bootstrap, [topic])
    n = 10_000
    hours = [1_704_067_200_000 + i * 3_600_000 for i in range(n)]
    warm = 300
    values = [
        [None] * warm + [43_251.123456789 + i * 0.017 + k for i in range(warm, n)] for k in range(len(INDICATOR_NAMES))
    ]
    batch = IndicatorBatch.of_columns(
        [[f"ind-BTC-1h-{t}-0" for t in hours], ["BTC"] * n, [Interval.H1] * n, hours, *values, [0] * n]
    )
    bus = new_bus(kafka_bootstrap, "bigrows")
    await bus.start()
    try:
        await bus.publish_rows(topic, batch, linger=False)
        logged = await bus.read_log(topic)
    finally:
        await bus.stop()
    assert len(logged) > 2
    assert all(len(encode_event(b)) <= PRODUCER_BATCH_BYTES for b in logged)
    assert [r for b in logged for r in b.row_ids()] == batch.row_ids()  # type: ignore[attr-defined]
    assert [v for b in logged for v in b.macd] == batch.macd  # type: ignore[attr-defined]


async def test_a_co_partitioned_group_refuses_topics_of_different_partition_counts(kafka_bootstrap: str) -> None:
    name = f"test.copart.{uuid.uuid4().hex[:10]}"
    six, three = Topic(name, TickEvent, "test"), Topic(name + "-3", TickBatch, "test", partitions=3)
    await ensure_topics(kafka_bootstrap, [six, three])
    bus = new_bus(kafka_bootstrap, "copart")

    async def nothing(events: list[Event]) -> None:
        return None

    bus.subscribe(six, "g", nothing, co_partitioned=True)
    bus.subscribe(three, "g", nothing, co_partitioned=True)
    try:
        with pytest.raises(RuntimeError, match="equal partition counts"):
            await bus.start()
    finally:
        await bus.stop()
