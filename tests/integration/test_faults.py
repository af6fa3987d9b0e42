"""Fault injection on the real Kafka broker, counted by event id.

* ClickHouse unavailable for a while: the store writer (the real one, on the real chDB engine) gets
  ``OperationalError`` from clickhouse-connect — what its HTTP client raises when the server refuses or
  drops connections — for every insert during the outage, while ticks keep arriving, and scoring's
  indicators too, part of them published again by a second scorer (what a restarted scoring process
  re-publishes). The bus rewinds and redelivers; nothing is dead-lettered; after the outage the
  stored event ids are exactly the ones sent — every tick and every indicator once (the re-published
  indicators carry the same ids: output ids derive from the candle).
* A slow consumer: a handler that stalls, then works slowly, while a backlog of 20,000 events builds
  up. The consumer holds a bounded amount of it in memory (not the backlog), batches never exceed
  ``max_batch``, and every event is handled, none twice.

The broker restart, the scoring kill -9 and the alerts kill -9 are in tests/e2e (processes).
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from clickhouse_connect.driver.exceptions import OperationalError
from tokenpulse_gateway.writer import TABLES, StoreWriter
from tokenpulse_ingest.bundle import Bar, bar_to_event, iter_bundle
from tokenpulse_scoring.service import ScoringService
from tokenpulse_shared.bus.kafka import KafkaBus
from tokenpulse_shared.events import Event, Interval, TickEvent
from tokenpulse_shared.settings import DEFAULT_BUNDLE
from tokenpulse_shared.store import Store
from tokenpulse_shared.topics import DEAD_LETTER, INDICATORS, TICKS, Topic

pytestmark = [pytest.mark.kafka]

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def ticks(sym: str, n: int) -> list[TickEvent]:
    return [
        TickEvent(symbol=sym, source="fault", ts=T0 + timedelta(milliseconds=250 * i), price=100 + i % 7, size=1.0)
        for i in range(n)
    ]


def bars() -> list[Bar]:
    return next(b for _, _, b in iter_bundle(DEFAULT_BUNDLE, ["ETH"], [Interval.D1]))


async def until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def test_clickhouse_outage_buffers_in_kafka_and_loses_nothing(kafka_bootstrap: str, tmp_path: Path) -> None:
    sym = "F" + uuid.uuid4().hex[:6].upper()
    store = await Store(f"chdb://{tmp_path / 'ch'}").open()
    client = store.client
    real_insert = client.insert
    outage = {"down": True, "refused": 0}

    def insert(table: str, *args: object, **kwargs: object) -> object:
        if outage["down"]:
            outage["refused"] += 1
            raise OperationalError("Error HTTPConnectionPool(host='clickhouse', port=8123): Connection refused")
        return real_insert(table, *args, **kwargs)

    client.insert = insert
    # the writer's group starts at the topic's end (the shared broker's history is not this test's)
    bus = KafkaBus(
        kafka_bootstrap, client_id="fault-writer", group_prefix=f"fault-{sym}", backoff_s=0.05, from_beginning=False
    )
    writer = StoreWriter(store)
    dead: list[str] = []  # this test's dead letters (the shared broker's topics hold other tests' poison)
    publish = bus.publish

    async def watching(topic: Topic, events: Sequence[Event]) -> None:
        if topic is DEAD_LETTER:
            dead.extend(e.payload for e in events if sym in getattr(e, "payload", ""))
        await publish(topic, events)

    bus.publish = watching  # type: ignore[method-assign]
    for table in ("ticks", "indicators"):  # two of the writer's subscriptions
        spec = TABLES[table]
        bus.subscribe(spec.topic, writer.name, writer._handler(spec))
    feeder = KafkaBus(kafka_bootstrap, client_id="fault-feeder")
    sent = ticks(sym, 6000)
    # scoring's outputs: 400 daily candles scored, then the last 150 scored again by a restarted scorer
    candles = [bar_to_event(sym, Interval.D1, b) for b in bars()[:400]]
    indicators, _, _ = ScoringService()._process(candles)
    restarted = ScoringService()
    restarted._process(candles[:250])
    republished, _, _ = restarted._process(candles[250:])
    await bus.start()
    await feeder.start()
    try:
        outage["down"] = False  # first the writer must be assigned its partitions: a warm-up tick, stored
        deadline = time.monotonic() + 120
        while writer.written["ticks"] == 0 and time.monotonic() < deadline:
            await feeder.publish(TICKS, ticks(sym + "W", 1))
            await asyncio.sleep(1.0)
        assert writer.written["ticks"], "the writer never started"
        warm = writer.written["ticks"]
        outage["down"] = True
        # during the outage: a first half, and some of it again (a redelivering producer)
        for i in range(0, 3000, 500):
            await feeder.publish(TICKS, sent[i : i + 500])
        await feeder.publish(TICKS, sent[1000:1200])
        await feeder.publish(INDICATORS, indicators)
        await feeder.publish(INDICATORS, republished)
        await until(lambda: outage["refused"] >= 10, 120, "the writer to meet the outage several times")
        assert writer.written["ticks"] == warm  # nothing got through while ClickHouse was down
        outage["down"] = False  # ClickHouse is back
        for i in range(3000, 6000, 500):
            await feeder.publish(TICKS, sent[i : i + 500])
        await feeder.publish(TICKS, sent[5800:6000])

        async def ids(table: str) -> list[str]:  # every row, before merges (no FINAL)
            rows = await store.query(f"SELECT event_id FROM {table} WHERE symbol = {{s:String}}", {"s": sym})
            return [r[0] for r in rows]

        async def stored() -> tuple[int, int]:
            return len(set(await ids("ticks"))), len(set(await ids("indicators")))

        deadline = time.monotonic() + 180
        found = await stored()
        while found < (len(sent), len(indicators)) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            found = await stored()
        await asyncio.sleep(2)  # anything duplicated or late would land now
        tick_rows, indicator_rows = await ids("ticks"), await ids("indicators")
        final = await store.query("SELECT count() FROM ticks FINAL WHERE symbol = {s:String}", {"s": sym})
    finally:
        await feeder.stop()
        await bus.stop()
        await store.close()
    # zero lost, zero duplicated, by event id: the stored ids are exactly the sent ones
    assert set(tick_rows) == {t.event_id for t in sent} and final[0][0] == len(sent)
    assert {i.event_id for i in republished} < {i.event_id for i in indicators}  # a re-publish: the same ids
    assert set(indicator_rows) == {i.event_id for i in indicators}
    assert dead == []  # an outage is transient: nothing was dead-lettered
    print(
        f"outage: {outage['refused']} inserts refused, {len(sent)} ticks sent (+400 resent), {len(tick_rows)} rows "
        f"before merge; {len(indicators)} indicators (+{len(republished)} re-published), {len(indicator_rows)} rows, "
        f"{len(set(indicator_rows))} distinct ids"
    )


async def test_a_slow_consumer_holds_a_bounded_part_of_the_backlog(kafka_bootstrap: str) -> None:
    sym = "S" + uuid.uuid4().hex[:6].upper()
    backlog = ticks(sym, 20_000)
    backlog_bytes = sum(len(e.model_dump_json()) for e in backlog)
    gate = asyncio.Event()
    seen: list[str] = []
    sizes: list[int] = []

    async def slow(events: list[Event]) -> None:
        mine = [e.event_id for e in events if getattr(e, "symbol", None) == sym]
        sizes.append(len(events))
        if not gate.is_set():
            await gate.wait()  # stalled: the backlog builds up behind this batch
        seen.extend(mine)
        await asyncio.sleep(0.01)  # then slow

    bus = KafkaBus(kafka_bootstrap, client_id="slow", group_prefix=f"slow-{sym}", from_beginning=False)
    bus.subscribe(TICKS, "slow", slow, max_batch=500)
    feeder = KafkaBus(kafka_bootstrap, client_id="slow-feeder")
    await bus.start()
    await feeder.start()
    try:
        # the group reads from its start: wait until it is assigned and has its first (stalled) batch
        deadline = time.monotonic() + 60
        while not sizes and time.monotonic() < deadline:
            await feeder.publish(TICKS, ticks(sym + "W", 1))  # a warm-up event, not counted
            await asyncio.sleep(1.0)
        assert sizes, "the slow consumer never received its first batch"
        tracemalloc.start()
        base, _ = tracemalloc.get_traced_memory()
        for i in range(0, len(backlog), 1000):
            await feeder.publish(TICKS, backlog[i : i + 1000])
        await asyncio.sleep(3)  # the consumer's fetcher fills whatever buffer it allows itself
        held, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        gate.set()
        await until(lambda: len(set(seen)) >= len(backlog), 240, "the slow consumer to work off the backlog")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        await feeder.stop()
        await bus.stop()
    # bounded memory: while stalled it buffered a part of the backlog, not the backlog
    print(
        f"slow consumer: backlog {backlog_bytes / 1e6:.1f} MB as JSON; buffered while stalled "
        f"{(held - base) / 1e6:.1f} MB; peak while working it off {(peak - base) / 1e6:.1f} MB; batches <= {max(sizes)}"
    )
    assert max(sizes) <= 500  # batches are bounded by max_batch
    assert set(seen) >= {e.event_id for e in backlog}  # nothing lost
    assert len(seen) == len(set(seen))  # nothing handled twice (no rebalance, no failure: no redelivery)
    assert held - base < backlog_bytes / 2  # stalled, it does not keep fetching: the backlog stays in Kafka
    # working it off, it holds what one fetch round brings (aiokafka's fetch_max_bytes, 50 MB, caps it) and one
    # decoded batch: a bound that does not grow with the backlog
    assert peak - base < 64e6
