"""Kafka adapter of the bus port, on FastStream's KafkaBroker (aiokafka underneath).

* producer: our own aiokafka producer, idempotent (``enable_idempotence=True``,
  acks=all), key = the event's partition key (the token symbol), JSON bodies.
  One PRODUCER span per published batch, whose W3C context goes into every
  message's headers (FastStream's per-message publish path, with a span per
  message, capped a bulk publish at ~7k events/s on this machine);
* consumers: one consumer group per service (``PREFIX-SERVICE``), batch
  subscribers with ``AckPolicy.NACK_ON_ERROR``: offsets are committed only
  after the handler returned, and a :class:`TransientError` rewinds the batch
  so it is redelivered (at-least-once). Invalid messages and events a handler
  keeps failing on go to the dead-letter topic with the reason and are then
  committed, so a poison message never blocks a partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind, TracerProvider

from tokenpulse_shared.bus.base import (
    Bus,
    RawMessage,
    Subscription,
    TransientError,
    dead_letter_for,
    decode_message,
    encode_event,
)
from tokenpulse_shared.events import DeadLetterEvent, Event
from tokenpulse_shared.topics import ALL_TOPICS, Topic

log = logging.getLogger(__name__)

JSON_HEADERS = {"content-type": "application/json"}
MAX_LINKS = 16


def _headers(record: Any) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") for k, v in (record.headers or ())}


def _raw(record: Any) -> RawMessage:
    key = record.key.decode("utf-8", "replace") if record.key else None
    return RawMessage(value=record.value, key=key, headers=_headers(record))


async def _raw_decoder(msg: Any) -> Any:
    """Keep bodies as bytes: validation (and dead-lettering) is ours, per message."""
    return None


def _decode_all(topic: Topic, values: list[bytes]) -> list[Event]:
    out = []
    for value in values:
        with contextlib.suppress(ValueError):
            out.append(decode_message(topic, RawMessage(value=value)))
    return out


async def ensure_topics(bootstrap: str, topics: Sequence[Topic] = ALL_TOPICS, replication: int = 1) -> None:
    """Create the contract's topics (compaction where the contract says so); existing ones are kept."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="tokenpulse-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(
                name=t.name,
                num_partitions=t.partitions,
                replication_factor=replication,
                topic_configs={"cleanup.policy": "compact"} if t.compacted else {},
            )
            for t in topics
            if t.name not in existing
        ]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
            # wait (briefly) until the new partitions have leaders, so the first sends do not bounce
            names = [t.name for t in new]
            for _ in range(50):
                described = await admin.describe_topics(names)
                parts = [p for d in described for p in d.get("partitions", [])]
                if len(described) == len(names) and parts and all(p["leader"] >= 0 for p in parts):
                    break
                await asyncio.sleep(0.2)
    finally:
        await admin.close()


class KafkaBus(Bus):
    """The distributed-mode bus."""

    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str = "tokenpulse",
        group_prefix: str = "tokenpulse",
        tracer_provider: TracerProvider | None = None,
        prometheus_registry: Any | None = None,
        from_beginning: bool = True,
        replication: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bootstrap = bootstrap
        self.group_prefix = group_prefix
        self.from_beginning = from_beginning
        self.replication = replication
        # Spans are ours on both sides (one PRODUCER span per published batch, one CONSUMER span per
        # handled batch); FastStream's telemetry middleware parsed every message's baggage on top.
        middlewares: list[Any] = []
        if prometheus_registry is not None:
            from faststream.kafka.prometheus import KafkaPrometheusMiddleware

            middlewares.append(KafkaPrometheusMiddleware(registry=prometheus_registry))
        self.broker = KafkaBroker(
            bootstrap,
            client_id=client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            middlewares=tuple(middlewares),
            logger=None,
        )
        self._started = False
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("tokenpulse.bus.kafka")
        self.client_id = client_id
        self.producer: AIOKafkaProducer | None = None
        self.published: Any = None
        if prometheus_registry is not None:
            from prometheus_client import Counter

            self.published = Counter(
                "tokenpulse_bus_published",
                "Events published to Kafka, per topic",
                ["topic"],
                registry=prometheus_registry,
            )

    def group_id(self, group: str) -> str:
        return f"{self.group_prefix}-{group}"

    def _offset_reset(self, sub: Subscription) -> Literal["latest", "earliest"]:
        if sub.tail:
            return "latest"
        return "earliest" if (self.from_beginning or sub.broadcast) else "latest"

    async def start(self) -> None:
        await ensure_topics(self.bootstrap, replication=self.replication)
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
        )
        await self.producer.start()
        for sub in self.subscriptions:
            # broadcast: no group, every partition from the beginning at every start, nothing committed;
            # tail: the same from the end (only what is published from now on)
            subscriber = self.broker.subscriber(
                sub.topic.name,
                group_id=None if sub.broadcast else self.group_id(sub.group),
                batch=True,
                max_records=sub.max_batch,
                batch_timeout_ms=100,
                auto_offset_reset=self._offset_reset(sub),
                ack_policy=AckPolicy.ACK_FIRST if sub.broadcast else AckPolicy.NACK_ON_ERROR,
                decoder=_raw_decoder,
            )
            subscriber(self._make_handler(sub))
        await self.broker.start()
        self._started = True

    async def stop(self) -> None:
        if self._started:
            await self.broker.stop()  # consumers first: a handler still running may publish
            self._started = False
        if self.producer is not None:
            await self.producer.stop()  # flushes what is buffered
            self.producer = None

    async def ready(self) -> bool:
        try:
            return bool(await self.broker.ping(timeout=2.0))
        except Exception:
            return False

    async def _partitions(self, name: str) -> list[int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="tokenpulse-admin")
        await admin.start()
        try:
            for _ in range(50):  # a topic created a moment ago takes a moment to have leaders
                described = await admin.describe_topics([name])
                parts = [p for d in described if d["topic"] == name for p in d["partitions"]]
                if parts and all(p["leader"] >= 0 for p in parts):
                    return sorted(p["partition"] for p in parts)
                await asyncio.sleep(0.2)
        finally:
            await admin.close()
        raise TransientError(f"{name} has no partition leaders yet; is the broker healthy?")

    async def _committed(self, group: str, topic: Topic) -> dict[int, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="tokenpulse-admin")
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(self.group_id(group))
        finally:
            await admin.close()
        return {
            tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic.name and meta.offset >= 0
        }

    async def read_log(self, topic: Topic, since_ms: int | None = None, until_group: str | None = None) -> list[Event]:
        await ensure_topics(self.bootstrap, [topic], replication=self.replication)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="tokenpulse-log",
        )
        await consumer.start()
        events: list[Event] = []
        try:
            partitions = [TopicPartition(topic.name, p) for p in await self._partitions(topic.name)]
            consumer.assign(partitions)
            end = await consumer.end_offsets(partitions)
            if until_group is not None:  # what the group has processed, nothing on a partition it never committed
                committed = await self._committed(until_group, topic)
                end = {tp: min(end[tp], committed.get(tp.partition, 0)) for tp in partitions}
            # explicit offsets (not seek_to_beginning, whose lazy reset can race with the assignment)
            start = await consumer.beginning_offsets(partitions)
            if since_ms is not None:
                found = await consumer.offsets_for_times(dict.fromkeys(partitions, since_ms))
                start = {tp: (hit.offset if (hit := found.get(tp)) is not None else end[tp]) for tp in partitions}
            for tp in partitions:
                consumer.seek(tp, start[tp])
            remaining = {tp for tp in partitions if start[tp] < end[tp]}
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=5000)
                values = [
                    r.value
                    for tp, records in batch.items()
                    for r in records
                    if r.value is not None and r.offset < end[tp]
                ]
                # validation off the event loop: a long read must not starve heartbeats of the running consumers
                events.extend(await asyncio.to_thread(_decode_all, topic, values))
                for tp in list(remaining):
                    if await consumer.position(tp) >= end[tp]:
                        remaining.discard(tp)
        finally:
            await consumer.stop()
        return events

    def _make_handler(self, sub: Subscription) -> Any:
        bus = self

        async def handle_batch(message: KafkaMessage) -> None:
            records = message.raw_message
            if not isinstance(records, tuple):
                records = (records,)
            events: list[Event] = []
            dead: list[DeadLetterEvent] = []
            first: Any = None
            parents: dict[bytes, None] = {}  # distinct traceparents: a publisher stamps one per batch
            for record in records:
                if record.value is None:  # tombstone on a compacted topic: the deletion event came first
                    continue
                if first is None:
                    first = record
                elif len(parents) < MAX_LINKS:
                    for k, v in record.headers or ():
                        if k == "traceparent":
                            parents[v] = None
                            break
                try:
                    events.append(decode_message(sub.topic, RawMessage(value=record.value)))
                except ValueError as exc:
                    dead.append(dead_letter_for(sub.topic, sub.group, str(exc), raw=_raw(record)))
            # The first message's trace continues through the handler (its publishes become children);
            # the other traces in the batch (up to MAX_LINKS distinct ones) are linked, as OpenTelemetry's
            # messaging conventions suggest for batches. Only those headers are parsed: per message it
            # cost more than validating the event.
            contexts = [propagate.extract(_headers(first))] if first is not None else []
            contexts += [propagate.extract({"traceparent": v.decode("ascii", "replace")}) for v in parents]
            parent = contexts[0] if contexts else None
            links = [Link(trace.get_current_span(c).get_span_context()) for c in contexts[1:]]
            try:
                with bus.tracer.start_as_current_span(
                    f"{sub.topic.name} process",
                    context=parent,
                    kind=SpanKind.CONSUMER,
                    links=[link for link in links if link.context.is_valid],
                    attributes={
                        "messaging.system": "kafka",
                        "messaging.destination.name": sub.topic.name,
                        "messaging.consumer.group.name": bus.group_id(sub.group),
                        "messaging.batch.message_count": len(records),
                    },
                ):
                    await bus.deliver(sub, events, dead)
            except TransientError as exc:
                log.warning("%s: transient failure (%s); batch will be redelivered", sub.group, exc)
                await asyncio.sleep(bus.backoff_s * 10)
                raise

        handle_batch.__name__ = f"{sub.group}_{sub.topic.name.replace('.', '_').replace('-', '_')}"
        return handle_batch

    def _producer(self) -> AIOKafkaProducer:
        if self.producer is None:
            raise RuntimeError("the Kafka bus is not started")
        return self.producer

    async def _send(self, topic: Topic, messages: list[tuple[bytes | None, bytes | None, dict[str, str]]]) -> None:
        """Send (value, key, headers) messages under one PRODUCER span; returns once the broker has them all."""
        if not messages:
            return
        producer = self._producer()
        with self.tracer.start_as_current_span(
            f"{topic.name} publish",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": topic.name,
                "messaging.batch.message_count": len(messages),
            },
        ):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            futures = []
            for value, key, headers in messages:
                merged = {**headers, **carrier}
                futures.append(
                    await producer.send(
                        topic.name, value=value, key=key, headers=[(k, v.encode()) for k, v in merged.items()]
                    )
                )
            await asyncio.gather(*futures)
        if self.published is not None:
            self.published.labels(topic.name).inc(len(messages))

    async def publish(self, topic: Topic, events: Sequence[Event]) -> None:
        for event in events:
            if not isinstance(event, topic.model):
                raise TypeError(f"{topic.name} carries {topic.model.__name__}, not {type(event).__name__}")
        await self._send(topic, [(encode_event(e), e.partition_key().encode(), JSON_HEADERS) for e in events])

    async def publish_raw(self, topic: Topic, messages: Sequence[RawMessage]) -> None:
        await self._send(topic, [(m.value or b"", m.key.encode() if m.key else None, m.headers) for m in messages])

    async def publish_tombstone(self, topic: Topic, key: str) -> None:
        await self._send(topic, [(None, key.encode(), {})])
