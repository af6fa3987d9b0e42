"""The in-process bus: per-key order, at-least-once redelivery, dead letters, no crashed consumer."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from tokenpulse_shared.bus import RawMessage, TransientError
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.events import DeadLetterEvent, Event, PriceEvent
from tokenpulse_shared.topics import DEAD_LETTER, PRICES

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def price(symbol: str, i: int) -> PriceEvent:
    return PriceEvent(symbol=symbol, ts=T0.replace(second=i % 60, minute=i // 60 % 60), price=float(i + 1))


async def test_events_of_one_key_arrive_in_publish_order() -> None:
    bus = InMemoryBus(partitions=3, max_batch=7)
    seen: dict[str, list[float]] = {}

    async def handler(events: list[Event]) -> None:
        for e in events:
            assert isinstance(e, PriceEvent)
            seen.setdefault(e.symbol, []).append(e.price)
        await asyncio.sleep(0)

    bus.subscribe(PRICES, "g", handler)
    await bus.start()
    for i in range(200):
        await bus.publish(PRICES, [price("BTC", i), price("ETH", i), price("SOL", i)])
    await bus.drain()
    await bus.stop()
    for symbol in ("BTC", "ETH", "SOL"):
        assert seen[symbol] == [float(i + 1) for i in range(200)]


async def test_every_group_gets_every_event() -> None:
    bus = InMemoryBus()
    got: dict[str, int] = {"a": 0, "b": 0}

    def counter(name: str):  # type: ignore[no-untyped-def]
        async def h(events: list[Event]) -> None:
            got[name] += len(events)

        return h

    bus.subscribe(PRICES, "a", counter("a"))
    bus.subscribe(PRICES, "b", counter("b"))
    await bus.start()
    await bus.publish(PRICES, [price("BTC", i) for i in range(50)])
    await bus.drain()
    await bus.stop()
    assert got == {"a": 50, "b": 50}


async def test_transient_failure_redelivers_the_batch_until_it_succeeds() -> None:
    bus = InMemoryBus(backoff_s=0.001)
    attempts = 0
    delivered: list[str] = []

    async def flaky(events: list[Event]) -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= 3:
            raise TransientError("store down")
        delivered.extend(e.event_id for e in events)

    dead: list[Event] = []

    async def dlq(events: list[Event]) -> None:
        dead.extend(events)

    bus.subscribe(PRICES, "w", flaky)
    bus.subscribe(DEAD_LETTER, "d", dlq)
    await bus.start()
    events = [price("BTC", i) for i in range(5)]
    await bus.publish(PRICES, events)
    await bus.drain()
    await bus.stop()
    assert attempts == 4
    assert sorted(delivered) == sorted(e.event_id for e in events)
    assert dead == []


async def test_malformed_messages_go_to_dead_letter_and_the_rest_flow() -> None:
    bus = InMemoryBus()
    good: list[Event] = []
    dead: list[DeadLetterEvent] = []

    async def handler(events: list[Event]) -> None:
        good.extend(events)

    async def dlq(events: list[Event]) -> None:
        dead.extend(e for e in events if isinstance(e, DeadLetterEvent))

    bus.subscribe(PRICES, "consumer", handler)
    bus.subscribe(DEAD_LETTER, "audit", dlq)
    await bus.start()
    valid = price("BTC", 1)
    await bus.publish_raw(
        PRICES,
        [
            RawMessage(b"garbage", key="BTC"),
            RawMessage(b'{"symbol":"BTC","ts":"2024-01-01T00:00:00Z","price":NaN}', key="BTC"),
            RawMessage(b'{"symbol":"BTC","ts":"2024-01-01T00:00:00Z","price":-3}', key="BTC"),
            RawMessage(valid.model_dump_json().encode(), key="BTC"),
        ],
    )
    await bus.drain()
    await bus.drain()
    await bus.stop()
    assert [e.event_id for e in good] == [valid.event_id]
    assert len(dead) == 3
    assert dead[0].payload == "garbage" and "not JSON" in dead[0].reason
    assert all(d.topic == PRICES.name and d.consumer == "consumer" for d in dead)
    assert "price" in dead[1].reason and "price" in dead[2].reason


async def test_an_event_the_handler_keeps_failing_on_is_dead_lettered_alone() -> None:
    bus = InMemoryBus(retries=1, backoff_s=0.001)
    handled: list[float] = []
    dead: list[DeadLetterEvent] = []

    async def picky(events: list[Event]) -> None:
        if any(e.price == 3.0 for e in events):  # type: ignore[attr-defined]
            raise RuntimeError("cannot handle 3")
        handled.extend(e.price for e in events)  # type: ignore[attr-defined]

    async def dlq(events: list[Event]) -> None:
        dead.extend(events)  # type: ignore[arg-type]

    bus.subscribe(PRICES, "picky", picky)
    bus.subscribe(DEAD_LETTER, "audit", dlq)
    await bus.start()
    await bus.publish(PRICES, [price("BTC", i) for i in range(5)])
    await bus.drain()
    await bus.drain()
    # the consumer is still alive afterwards
    await bus.publish(PRICES, [price("BTC", 10)])
    await bus.drain()
    await bus.stop()
    assert sorted(handled) == [1.0, 2.0, 4.0, 5.0, 11.0]
    assert len(dead) == 1 and "cannot handle 3" in dead[0].reason
    assert '"price":3.0' in dead[0].payload
