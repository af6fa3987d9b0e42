"""In-process bus for embedded mode: per-key ordered partitions, at-least-once delivery.

Each subscription gets ``partitions`` bounded asyncio queues; an event goes to
the queue picked by a stable hash of its key, and one worker per queue hands
batches to the handler in order, so per-key order holds as on Kafka. A
publish puts one chunk per partition (not one item per event), which keeps
the bus cheap for bulk replays. A bounded queue makes a fast publisher wait
for a slow consumer (backpressure) instead of growing memory. Trace context travels with each event as W3C
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
from tokenpulse_shared.telemetry import EVENTS_PUBLISHED
from tokenpulse_shared.topics import Topic

log = logging.getLogger(__name__)
tracer = trace.get_tracer("tokenpulse.bus.memory")

_Message = Event | RawMessage
_Chunk = tuple[list[_Message], dict[str, str]]


def partition_for(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode()) % partitions


class _Consumer:
    def __init__(self, bus: InMemoryBus, sub: Subscription, partitions: int, capacity: int) -> None:
        self.bus = bus
        self.sub = sub
        self.queues: list[asyncio.Queue[_Chunk]] = [asyncio.Queue(maxsize=capacity) for _ in range(partitions)]
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [
            asyncio.create_task(self._run(q), name=f"bus:{self.sub.group}:{self.sub.topic.name}:{i}")
            for i, q in enumerate(self.queues)
        ]

    async def put(self, partition: int, chunk: _Chunk) -> None:
        await self.queues[partition].put(chunk)

    async def _run(self, queue: asyncio.Queue[_Chunk]) -> None:
        sub = self.sub
        while True:
            messages, carrier = await queue.get()
            taken = 1
            while len(messages) < sub.max_batch and not queue.empty():
                more, _ = queue.get_nowait()
                messages = messages + more
                taken += 1
            try:
                for i in range(0, len(messages), sub.max_batch):
                    await self._handle(messages[i : i + sub.max_batch], carrier)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let a worker die
                log.exception("bus worker %s crashed on a batch", sub.group)
            finally:
                for _ in range(taken):
                    queue.task_done()

    async def _handle(self, batch: list[_Message], carrier: dict[str, str]) -> None:
        sub = self.sub
        events: list[Event] = []
        dead: list[DeadLetterEvent] = []
        for message in batch:
            if isinstance(message, RawMessage):
                try:
                    events.append(decode_message(sub.topic, message))
                except ValueError as exc:
                    dead.append(dead_letter_for(sub.topic, sub.group, str(exc), raw=message))
            else:
                events.append(message)
        parent = propagate.extract(carrier)
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

    def __init__(self, *, partitions: int = 4, capacity: int = 256, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.partitions = partitions
        self.capacity = capacity
        self._consumers: dict[str, list[_Consumer]] = {}
        self._started = False

    async def start(self) -> None:
        for sub in self.subscriptions:
            if sub.skip_own:
                continue  # one process, one bus: everything published here is this instance's own
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
        model = topic.model
        for event in events:
            if not isinstance(event, model):
                raise TypeError(f"{topic.name} carries {model.__name__}, not {type(event).__name__}")
        await self._fanout(topic, events, [e.partition_key() for e in events])

    async def publish_raw(self, topic: Topic, messages: Sequence[RawMessage]) -> None:
        await self._fanout(topic, messages, [m.key or "" for m in messages])

    async def _fanout(self, topic: Topic, messages: Sequence[_Message], keys: list[str]) -> None:
        EVENTS_PUBLISHED.labels(topic.name).inc(len(messages))
        consumers = self._consumers.get(topic.name, [])
        if not consumers or not messages:
            return
        chunks: dict[int, list[_Message]] = {}
        partition_of: dict[str, int] = {}
        for key, message in zip(keys, messages, strict=True):
            p = partition_of.get(key)
            if p is None:
                p = partition_of[key] = partition_for(key, self.partitions)
            chunks.setdefault(p, []).append(message)
        with tracer.start_as_current_span(
            f"{topic.name} publish",
            kind=trace.SpanKind.PRODUCER,
            attributes={
                "messaging.system": "in-process",
                "messaging.destination.name": topic.name,
                "messaging.batch.message_count": len(messages),
            },
        ):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            for p, chunk in chunks.items():
                for consumer in consumers:
                    await consumer.put(p, (chunk, carrier))

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
