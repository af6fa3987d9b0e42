"""What only the in-process adapter does: bounded queues, no log, one instance owning everything. The
behaviours both adapters share are in tests/contract/."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from tokenpulse_shared.bus import Delivery
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.events import Event, PriceEvent
from tokenpulse_shared.topics import PRICES

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def price(symbol: str, i: int) -> PriceEvent:
    return PriceEvent(symbol=symbol, ts=T0.replace(second=i % 60), price=float(i + 1))


async def test_a_full_queue_makes_the_publisher_wait() -> None:
    """Backpressure: a slow consumer slows its publisher down instead of growing memory."""
    bus = InMemoryBus(partitions=1, capacity=1)
    release = asyncio.Event()
    handled: list[float] = []

    async def blocked(events: list[Event]) -> None:
        await release.wait()
        handled.extend(e.price for e in events if isinstance(e, PriceEvent))

    bus.subscribe(PRICES, "slow", blocked)
    await bus.start()
    await bus.publish(PRICES, [price("BTC", 0)])  # taken by the worker, which blocks
    await asyncio.sleep(0.01)
    await bus.publish(PRICES, [price("BTC", 1)])  # fills the queue
    third = asyncio.create_task(bus.publish(PRICES, [price("BTC", 2)]))
    await asyncio.sleep(0.1)
    assert not third.done()
    release.set()
    await asyncio.wait_for(third, 5)
    await bus.drain()
    await bus.stop()
    assert handled == [1.0, 2.0, 3.0]


async def test_alone_a_tail_others_subscription_receives_nothing() -> None:
    """One process, one instance: everything published is its own (its peers' messages it does receive)."""
    bus = InMemoryBus()
    seen: list[Event] = []

    async def handler(events: list[Event]) -> None:
        seen.extend(events)

    bus.subscribe(PRICES, "alerts", handler, delivery=Delivery.TAIL_OTHERS)
    await bus.start()
    await bus.publish(PRICES, [price("BTC", 0)])
    await bus.drain()
    await bus.stop()
    assert seen == []


async def test_there_is_no_log_to_read() -> None:
    """Embedded mode rebuilds such state from the store."""
    bus = InMemoryBus()
    await bus.start()
    await bus.publish(PRICES, [price("BTC", 0)])
    assert await bus.read_log(PRICES) == []
    await bus.stop()
