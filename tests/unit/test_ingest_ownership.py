"""Ingest state owned per ticks partition: split, restored apart, adopted, dropped, kept across a rebalance.

The builder and reconciler hold state per symbol; a replica holds the symbols of its partitions. Restoring a
partition into an empty builder and adopting it must give what one builder fed every tick has; the service
keeps a partition's state across a rebalance only when the group gives it back at the offset it left it
(no one else handled it), and rebuilds it otherwise. The e2e proof with a real broker is
``tests/e2e/test_ingest_scale_out.py``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from tokenpulse_ingest.candles import CandleBuilder
from tokenpulse_ingest.prices import PriceReconciler
from tokenpulse_ingest.service import IngestService
from tokenpulse_shared.bus import Assignment
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.events import Event, TickEvent
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.topics import DEAD_LETTER, UNIVERSE

T0 = datetime(2024, 12, 5, tzinfo=UTC)


def ticks(symbols: tuple[str, ...], n: int, start: int = 0) -> list[TickEvent]:
    return [
        TickEvent(
            symbol=s,
            source=("x", "y")[i % 2],
            ts=T0 + timedelta(seconds=7 * i, milliseconds=k),
            price=100.0 + i % 13 + k,
            size=0.5 + i % 3,
            trade_id=f"{s}-{i}",
        )
        for i in range(start, start + n)
        for k, s in enumerate(symbols)
    ]


def partition_of(symbol: str) -> int:
    return 0 if symbol.startswith("A") else 1


def held(builder: CandleBuilder) -> list[dict[str, object]]:
    return [c.model_dump(exclude={"produced_at"}) for c in builder.open_buckets()]


def test_partitions_restored_apart_and_adopted_equal_one_builder_fed_everything() -> None:
    feed = ticks(("AAA", "BBB"), 300)
    whole = CandleBuilder()
    whole.add(feed, wall=0.0)
    split = CandleBuilder()
    for p in (0, 1):
        part = split.empty_like()
        part.restore([t for t in feed if partition_of(t.symbol) == p], wall=0.0)
        split.adopt(part)
    assert held(split) == held(whole)
    assert split.symbols() == {"AAA", "BBB"}
    split.drop({"BBB"})
    assert split.symbols() == {"AAA"}
    assert {c.symbol for c in split.open_buckets()} == {"AAA"}


def test_a_replayed_reconciler_prices_the_next_tick_as_the_one_that_saw_everything() -> None:
    feed = ticks(("AAA",), 200)
    live = PriceReconciler()
    for i in range(0, 150, 7):  # the original batches
        live.update(feed[i : min(i + 7, 150)], wall=1.0)
    rebuilt = PriceReconciler().empty_like()
    rebuilt.replay(feed[:150], wall=1.0, batch=40)  # other batch boundaries
    nxt = feed[150:151]
    assert [p.price for p in rebuilt.update(nxt, wall=2.0)] == [p.price for p in live.update(nxt, wall=2.0)]


async def started_service() -> tuple[IngestService, list[Event]]:
    bus = InMemoryBus()
    dead: list[Event] = []

    async def keep(events: list[Event]) -> None:
        dead.extend(events)

    bus.subscribe(DEAD_LETTER, "t", keep)
    service = IngestService()
    service.register(Context(settings=Settings(), bus=bus, embedded=False))  # Kafka's rebalance semantics
    await bus.start()
    return service, dead


async def assign(service: IngestService, offsets: dict[int, int]) -> None:
    """A rebalance's new assignment, as the co-partitioned group reports it: once per ticks topic."""
    for topic in service.ticks_topics:
        await service.on_assign(Assignment(topic, frozenset(offsets), partition_of, offsets))
    await asyncio.wait_for(service.ready.wait(), 5)


async def revoke(service: IngestService, offsets: dict[int, int]) -> None:
    for topic in service.ticks_topics:
        await service.on_revoke(Assignment(topic, frozenset(offsets), partition_of, offsets))


async def test_a_partition_given_back_at_its_offset_keeps_its_state_another_is_rebuilt() -> None:
    service, _ = await started_service()
    await assign(service, {0: 10, 1: 10})
    await service.on_ticks(ticks(("AAA", "BBB"), 20))
    assert service.builder.symbols() == {"AAA", "BBB"}
    await revoke(service, {0: 30, 1: 30})
    assert not service.ready.is_set()  # ticks wait for the new assignment
    # partition 0 comes back as this replica left it; partition 1 was handled elsewhere meanwhile
    await assign(service, {0: 30, 1: 34})
    assert service.builder.symbols() == {"AAA"}  # BBB rebuilt from the (in-process: empty) log
    assert service.reconciler.symbols() == {"AAA"}
    await service.stop()


async def test_a_partition_lost_takes_its_symbols() -> None:
    service, _ = await started_service()
    await assign(service, {0: 0, 1: 0})
    await service.on_ticks(ticks(("AAA", "BBB"), 20))
    await revoke(service, {0: 20, 1: 20})
    await assign(service, {0: 20})
    assert service.builder.symbols() == {"AAA"} and service.reconciler.symbols() == {"AAA"}
    await service.stop()


async def test_a_partition_is_kept_only_when_every_ticks_topic_is_given_back_unmoved() -> None:
    """ticks.v1 and ticks.v2 are one group: the replica acts once both reported, and keeps a partition's state
    only if neither topic's part of it was handled elsewhere meanwhile."""
    service, _ = await started_service()
    assert len(service.ticks_topics) == 2
    await assign(service, {0: 0, 1: 0})
    await service.on_ticks(ticks(("AAA", "BBB"), 20))
    await revoke(service, {0: 20, 1: 20})
    v1, v2 = service.ticks_topics
    await service.on_assign(Assignment(v1, frozenset({0, 1}), partition_of, {0: 20, 1: 20}))
    assert not service.ready.is_set() and service.builder.symbols() == {"AAA", "BBB"}  # waits for ticks.v2's part
    await service.on_assign(Assignment(v2, frozenset({0, 1}), partition_of, {0: 20, 1: 23}))
    await asyncio.wait_for(service.ready.wait(), 5)
    assert service.builder.symbols() == {"AAA"}  # partition 1 of ticks.v2 moved on: BBB rebuilt (empty log)
    await service.stop()


async def test_the_synthetic_walk_covers_the_tokens_of_the_feed_partitions_assigned() -> None:
    """Feed ownership, synthetic feed: on Kafka a replica walks no token before the ingest-feeds group assigns
    it universe partitions, then exactly the tokens of those; a new assignment moves the walk with it."""
    bus = InMemoryBus()
    settings = Settings(runtime={"symbols": ["AAA", "ABC", "BBB", "BCD"]}, ingest={"live_feed": "synthetic"})
    ctx = Context(settings=settings, bus=bus, embedded=False)
    service = IngestService()
    service.register(ctx)
    await bus.start()
    service.feed_share = None  # the in-process bus assigned everything at start: Kafka has not yet
    await service.start(ctx)
    try:
        assert service.feed is not None and set(service.feed.states) == set()
        for partitions, walked in (
            ({0}, {"AAA", "ABC"}),
            ({1}, {"BBB", "BCD"}),
            ({0, 1}, {"AAA", "ABC", "BBB", "BCD"}),
        ):
            await service.on_feeds_assign(Assignment(UNIVERSE, frozenset(partitions), partition_of))
            await asyncio.wait_for(asyncio.gather(*service._follows), 5)
            assert set(service.feed.states) == walked
            assert ctx.status["feed_share"] == f"{len(walked)} of 4 tokens"
    finally:
        await service.stop()
