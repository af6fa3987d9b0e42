"""Kafka adapter of the bus port, on FastStream's KafkaBroker (aiokafka underneath).

* producer: idempotent (``enable_idempotence=True``, acks=all), key = the
  event's partition key (the token symbol), JSON bodies, W3C trace context in
  headers (FastStream's ``KafkaTelemetryMiddleware``);
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


async def _raw_decoder(msg: Any) -> Any:
    """Keep bodies as bytes: validation (and dead-lettering) is ours, per message."""
    return None


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
        middlewares: list[Any] = []
        from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware

        middlewares.append(KafkaTelemetryMiddleware(tracer_provider=tracer_provider))
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

    def group_id(self, group: str) -> str:
        return f"{self.group_prefix}-{group}"

    def _offset_reset(self, sub: Subscription) -> Literal["latest", "earliest"]:
        if sub.tail:
            return "latest"
        return "earliest" if (self.from_beginning or sub.broadcast) else "latest"

    async def start(self) -> None:
        await ensure_topics(self.bootstrap, replication=self.replication)
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
            await self.broker.stop()
            self._started = False

    async def ready(self) -> bool:
        try:
            return bool(await self.broker.ping(timeout=2.0))
        except Exception:
            return False

    def _make_handler(self, sub: Subscription) -> Any:
        bus = self

        async def handle_batch(message: KafkaMessage) -> None:
            records = message.raw_message
            if not isinstance(records, tuple):
                records = (records,)
            events: list[Event] = []
            dead: list[DeadLetterEvent] = []
            contexts = []
            for record in records:
                if record.value is None:  # tombstone on a compacted topic: the deletion event came first
                    continue
                raw = RawMessage(
                    value=record.value,
                    key=record.key.decode("utf-8", "replace") if record.key else None,
                    headers={k: v.decode("utf-8", "replace") for k, v in (record.headers or ())},
                )
                contexts.append(propagate.extract(raw.headers))
                try:
                    events.append(decode_message(sub.topic, raw))
                except ValueError as exc:
                    dead.append(dead_letter_for(sub.topic, sub.group, str(exc), raw=raw))
            # The first message's trace continues through the handler (its publishes become children);
            # the others of the batch are linked, as OpenTelemetry's messaging conventions suggest.
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

    async def publish(self, topic: Topic, events: Sequence[Event]) -> None:
        futures = []
        for event in events:
            if not isinstance(event, topic.model):
                raise TypeError(f"{topic.name} carries {topic.model.__name__}, not {type(event).__name__}")
            futures.append(
                await self.broker.publish(
                    encode_event(event),
                    topic.name,
                    key=event.partition_key().encode(),
                    headers=dict(JSON_HEADERS),
                    no_confirm=True,
                )
            )
        if futures:
            await asyncio.gather(*futures)

    async def publish_raw(self, topic: Topic, messages: Sequence[RawMessage]) -> None:
        futures = [
            await self.broker.publish(
                m.value or b"",
                topic.name,
                key=m.key.encode() if m.key else None,
                headers=m.headers or None,
                no_confirm=True,
            )
            for m in messages
        ]
        if futures:
            await asyncio.gather(*futures)

    async def publish_tombstone(self, topic: Topic, key: str) -> None:
        await self.broker.publish(None, topic.name, key=key.encode())
