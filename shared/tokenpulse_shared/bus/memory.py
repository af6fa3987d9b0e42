"""In-process bus for embedded mode: per-key ordered partitions, at-least-once delivery.

Each subscription gets ``partitions`` bounded asyncio queues; an event goes to
the queue picked by a stable hash of its key, and one worker per queue hands
batches to the handler in order, so per-key order holds as on Kafka. A
bounded queue makes a fast publisher wait for a slow consumer (backpressure)
instead of growing memory. Trace context travels with each event as W3C
headers, exactly as Kafka headers carry it.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from tokenpulse_shared.bus.base import (
    Bus,
    RawMessage,
    Subscription,
    TransientError,
    dead_letter_for,
    decode_message,
)
from tokenpulse_shared.events import DeadLetterEvent, Event
from tokenpulse_shared.topics import Topic

log = logging.getLogger(__name__)
tracer = trace.get_tracer("tokenpulse.bus.memory")

_Item = tuple[Event | RawMessage, dict[str, str]]


def partition_for(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode()) % partitions


class _Consumer:
    def __init__(self, bus: InMemoryBus, sub: Subscription, partitions: int, capacity: int) -> None:
        self.bus = bus
        self.sub = sub
        self.queues: list[asyncio.Queue[_Item]] = [asyncio.Queue(maxsize=capacity) for _ in range(partitions)]
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [
            asyncio.create_task(self._run(q), name=f"bus:{self.sub.group}:{self.sub.topic.name}:{i}")
            for i, q in enumerate(self.queues)
        ]

    async def put(self, key: str, item: _Item) -> None:
        await self.queues[partition_for(key, len(self.queues))].put(item)

    async def _run(self, queue: asyncio.Queue[_Item]) -> None:
        sub = self.sub
        while True:
            batch = [await queue.get()]
            while len(batch) < sub.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                await self._handle(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let a worker die: log and drop to dead letters
                log.exception("bus worker %s crashed on a batch", sub.group)
            finally:
                for _ in batch:
                    queue.task_done()

    async def _handle(self, batch: list[_Item]) -> None:
        sub = self.sub
        events: list[Event] = []
        dead: list[DeadLetterEvent] = []
        for message, _ in batch:
            if isinstance(message, RawMessage):
                try:
                    events.append(decode_message(sub.topic, message))
                except ValueError as exc:
                    dead.append(dead_letter_for(sub.topic, sub.group, str(exc), raw=message))
            else:
                events.append(message)
        parent = propagate.extract(batch[0][1])
        token = otel_context.attach(parent)
        try:
            attempt = 0
            while True:
                with tracer.start_as_current_span(
                    f"{sub.topic.name} process",
                    kind=trace.SpanKind.CONSUMER,
                    attributes={
                        "messaging.system": "in-process",
                        "messaging.destination.name": sub.topic.name,
                        "messaging.consumer.group.name": sub.group,
                        "messaging.batch.message_count": len(batch),
                    },
                ):
                    try:
                        await self.bus.deliver(sub, events, dead)
                        return
                    except TransientError as exc:
                        attempt += 1
                        delay = min(30.0, self.bus.backoff_s * 2 ** min(attempt, 8))
                        log.warning("%s: transient failure (%s); redelivering in %.1fs", sub.group, exc, delay)
                await asyncio.sleep(delay)
        finally:
            otel_context.detach(token)

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class InMemoryBus(Bus):
    """The embedded-mode bus. Same port and guarantees as the Kafka adapter, within one process."""

    def __init__(self, *, partitions: int = 4, capacity: int = 20_000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.partitions = partitions
        self.capacity = capacity
        self._consumers: dict[str, list[_Consumer]] = {}
        self._started = False

    async def start(self) -> None:
        for sub in self.subscriptions:
            consumer = _Consumer(self, sub, self.partitions, self.capacity)
            self._consumers.setdefault(sub.topic.name, []).append(consumer)
            consumer.start()
        self._started = True

    async def stop(self) -> None:
        for consumers in self._consumers.values():
            for c in consumers:
                await c.stop()
        self._consumers.clear()
        self._started = False

    async def publish(self, topic: Topic, events: Sequence[Event]) -> None:
        for event in events:
            if not isinstance(event, topic.model):
                raise TypeError(f"{topic.name} carries {topic.model.__name__}, not {type(event).__name__}")
        await self._fanout(topic, [(e.partition_key(), e) for e in events])

    async def publish_raw(self, topic: Topic, messages: Sequence[RawMessage]) -> None:
        await self._fanout(topic, [(m.key or "", m) for m in messages])

    async def _fanout(self, topic: Topic, keyed: Sequence[tuple[str, Event | RawMessage]]) -> None:
        consumers = self._consumers.get(topic.name, [])
        if not consumers:
            return
        with tracer.start_as_current_span(
            f"{topic.name} publish",
            kind=trace.SpanKind.PRODUCER,
            attributes={
                "messaging.system": "in-process",
                "messaging.destination.name": topic.name,
                "messaging.batch.message_count": len(keyed),
            },
        ):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            for key, message in keyed:
                for consumer in consumers:
                    await consumer.put(key, (message, carrier))

    async def drain(self, timeout: float = 60.0) -> None:
        """Wait until every queued event has been handled (tests, backfill)."""

        async def _all() -> None:
            while True:
                pending = [q for cs in self._consumers.values() for c in cs for q in c.queues if q._unfinished_tasks]  # type: ignore[attr-defined]
                if not pending:
                    return
                for q in pending:
                    await q.join()

        await asyncio.wait_for(_all(), timeout)
