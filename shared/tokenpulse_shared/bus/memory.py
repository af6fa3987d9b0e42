"""In-process bus for embedded mode: per-key ordered partitions, at-least-once delivery.

Each subscription gets ``partitions`` bounded asyncio queues; an event goes to
the queue picked by a stable hash of its key, and one worker per queue hands
batches to the handler in order, so per-key order holds as on Kafka. A
publish puts one chunk per partition (not one item per event), which keeps
the bus cheap for bulk replays. A bounded queue makes a fast publisher wait
for a slow consumer (backpressure) instead of growing memory. Trace context travels with each event as W3C
headers, exactly as Kafka headers carry it.

Instances made with :meth:`InMemoryBus.peer` share one set of topics, as the replicas of a service share a
broker: a :attr:`~Delivery.SHARED` group's partitions are split among its consumers, the other deliveries
give each consumer every message (:attr:`~Delivery.TAIL_OTHERS` leaves out its own instance's). There is no
rebalance: a subscription's ``on_assign`` is called once at start with every partition.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from tokenpulse_shared.batches import RowBatch
from tokenpulse_shared.bus.base import (
    Assignment,
    Bus,
    Delivery,
    RawMessage,
    RowPlacer,
    Subscription,
    TransientError,
    dead_letter_for,
    decode_message,
    publish_span,
)
from tokenpulse_shared.events import DeadLetterEvent, Event
from tokenpulse_shared.telemetry import EVENTS_PUBLISHED
from tokenpulse_shared.topics import Topic

log = logging.getLogger(__name__)

_Message = Event | RawMessage
_Chunk = tuple[list[_Message], dict[str, str]]


def partition_for(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode()) % partitions


class _Consumer:
    def __init__(self, bus: InMemoryBus, sub: Subscription, partitions: int, capacity: int) -> None:
        self.bus = bus
        self.sub = sub
        self.queues: list[asyncio.Queue[_Chunk]] = [asyncio.Queue(maxsize=capacity) for _ in range(partitions)]
        self.pending = 0  # chunks put and not yet handled (drain waits for none)
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [
            asyncio.create_task(self._run(q), name=f"bus:{self.sub.group}:{self.sub.topic.name}:{i}")
            for i, q in enumerate(self.queues)
        ]

    async def put(self, partition: int, chunk: _Chunk) -> None:
        self.pending += 1
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
                self.pending -= taken
                for _ in range(taken):
                    queue.task_done()

    async def _handle(self, batch: list[_Message], carrier: dict[str, str]) -> None:
        sub = self.sub
        events: list[Event] = []
        dead: list[DeadLetterEvent] = []
        misplaced: list[Event] = []
        for message in batch:
            if isinstance(message, RawMessage):
                try:
                    event = decode_message(sub.topic, message)
                except ValueError as exc:
                    dead.append(dead_letter_for(sub.topic, sub.group, str(exc), raw=message))
                    continue
                # placed by its key: another key than its token's may have put it in another partition
                into = misplaced if sub.on_misplaced and message.key != event.partition_key() else events
                into.append(event)
            else:
                events.append(message)
        parent = propagate.extract(carrier)
        token = otel_context.attach(parent)
        try:
            attempt = 0
            while True:
                with self.bus.tracer.start_as_current_span(
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
                        if misplaced and sub.on_misplaced is not None:
                            await sub.on_misplaced(misplaced)
                            misplaced = []
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


class _Topics:
    """What peer instances share: the consumers of each topic (the in-process stand-in for a broker)."""

    def __init__(self) -> None:
        self.consumers: dict[str, list[_Consumer]] = {}

    def targets(self, topic: Topic, partition: int, publisher: InMemoryBus, copy: bool = False) -> list[_Consumer]:
        """The consumers a message of ``partition`` goes to: one per shared group (the partition's owner among
        the group's consumers), every other consumer, except the publisher's own tail-others ones."""
        out: list[_Consumer] = []
        groups: dict[str, list[_Consumer]] = {}
        for consumer in self.consumers.get(topic.name, []):
            if copy and consumer.bus.reads_rows_instead(consumer.sub.group, topic):
                continue
            delivery = consumer.sub.delivery
            if delivery is Delivery.SHARED:
                groups.setdefault(consumer.sub.group, []).append(consumer)
            elif delivery is not Delivery.TAIL_OTHERS or consumer.bus is not publisher:
                out.append(consumer)
        out.extend(members[partition % len(members)] for members in groups.values())
        return out


class InMemoryBus(Bus):
    """The embedded-mode bus. Same port and guarantees as the Kafka adapter, within one process."""

    tracer_name = "tokenpulse.bus.memory"

    def __init__(self, *, partitions: int = 4, capacity: int = 256, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.partitions = partitions
        self.capacity = capacity
        self._kwargs = kwargs
        self._topics = _Topics()
        self._own: list[_Consumer] = []

    def peer(self, **overrides: Any) -> InMemoryBus:
        """Another instance on the same topics, as a second replica of a service on the same broker."""
        other = InMemoryBus(partitions=self.partitions, capacity=self.capacity, **(self._kwargs | overrides))
        other._topics = self._topics
        return other

    async def start(self) -> None:
        for sub in self.subscriptions:  # state owned per partition is built before anything is delivered
            if sub.on_assign is not None:
                await sub.on_assign(Assignment(sub.topic, frozenset(range(self.partitions)), self.partition_of))
        for sub in self.subscriptions:
            consumer = _Consumer(self, sub, self.partitions, self.capacity)
            self._topics.consumers.setdefault(sub.topic.name, []).append(consumer)
            self._own.append(consumer)
            consumer.start()

    def partition_of(self, key: str) -> int:
        return partition_for(key, self.partitions)

    async def stop(self) -> None:
        await self.flush_rows()
        for consumer in self._own:
            self._topics.consumers[consumer.sub.topic.name].remove(consumer)
            await consumer.stop()
        self._own.clear()

    async def publish(self, topic: Topic, events: Sequence[Event]) -> None:
        if topic.batched:  # each batch's rows, placed by their tokens
            for batch in events:
                await self.publish_rows(topic, batch, linger=False)  # type: ignore[arg-type]
            return
        model = topic.model
        for event in events:
            if not isinstance(event, model):
                raise TypeError(f"{topic.name} carries {model.__name__}, not {type(event).__name__}")
        await self._fanout(topic, events, [e.partition_key() for e in events])

    async def publish_v1_copy(self, topic: Topic, events: Sequence[Event]) -> None:
        await self._fanout(topic, events, [e.partition_key() for e in events], copy=True)

    async def publish_raw(self, topic: Topic, messages: Sequence[RawMessage]) -> None:
        await self._fanout(topic, messages, [m.key or "" for m in messages])

    async def _row_placer(self, topic: Topic) -> RowPlacer:
        known: dict[str, int] = {}
        partitions = self.partitions

        def place(symbol: str) -> int:
            p = known.get(symbol)
            if p is None:
                p = known[symbol] = partition_for(symbol, partitions)
            return p

        return place

    async def _send_batches(self, topic: Topic, batches: Sequence[tuple[int, RowBatch]]) -> None:
        EVENTS_PUBLISHED.labels(topic.name).inc(len(batches))
        if not self._topics.consumers.get(topic.name) or not batches:
            return
        chunks: dict[int, list[_Message]] = {}
        for p, batch in batches:
            chunks.setdefault(p, []).append(batch)
        await self._deliver_chunks(topic, chunks, len(batches))

    async def _fanout(self, topic: Topic, messages: Sequence[_Message], keys: list[str], copy: bool = False) -> None:
        EVENTS_PUBLISHED.labels(topic.name).inc(len(messages))
        if not self._topics.consumers.get(topic.name) or not messages:
            return
        chunks: dict[int, list[_Message]] = {}
        partition_of: dict[str, int] = {}
        for key, message in zip(keys, messages, strict=True):
            p = partition_of.get(key)
            if p is None:
                p = partition_of[key] = partition_for(key, self.partitions)
            chunks.setdefault(p, []).append(message)
        await self._deliver_chunks(topic, chunks, len(messages), copy)

    async def _deliver_chunks(
        self, topic: Topic, chunks: dict[int, list[_Message]], count: int, copy: bool = False
    ) -> None:
        with publish_span(self.tracer, "in-process", topic, count):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            for p, chunk in chunks.items():
                for consumer in self._topics.targets(topic, p, self, copy):
                    await consumer.put(p, (chunk, carrier))

    async def drain(self, timeout: float = 60.0) -> None:
        """Wait until every queued event (of this instance and its peers) has been handled (tests, backfill)."""

        async def _all() -> None:
            while busy := [c for cs in self._topics.consumers.values() for c in cs if c.pending]:
                await asyncio.gather(*(q.join() for c in busy for q in c.queues))

        await asyncio.wait_for(_all(), timeout)
