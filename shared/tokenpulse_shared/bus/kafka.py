"""Kafka adapter of the bus port, on FastStream's KafkaBroker (aiokafka underneath).

* producer: our own aiokafka producer, idempotent (``enable_idempotence=True``,
  acks=all), key = the event's partition key (the token symbol), JSON bodies.
  One PRODUCER span per published batch, whose W3C context goes into every
  message's headers (FastStream's per-message publish path, with a span per
  message, capped a bulk publish at ~7k events/s on this machine);
* consumers: one consumer group per service (``PREFIX-SERVICE``), one Kafka
  consumer per group over all its topics (tail ones apart), batch
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
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.structs import OffsetAndMetadata
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind, TracerProvider

from tokenpulse_shared.bus.base import (
    Bus,
    RawMessage,
    Rejected,
    Subscription,
    TransientError,
    dead_letter_for,
    decode_message,
    encode_event,
)
from tokenpulse_shared.events import DeadLetterEvent, Event
from tokenpulse_shared.telemetry import CONSUMER_LAG, EVENTS_PUBLISHED
from tokenpulse_shared.topics import ALL_TOPICS, Topic

log = logging.getLogger(__name__)

JSON_HEADERS = {"content-type": "application/json"}
MAX_LINKS = 16
ORIGIN = "tp-origin"  # header: the publishing bus instance (see Bus.subscribe(skip_own=...))
PRODUCER_BATCH_BYTES = 512 * 1024  # below the broker's default message.max.bytes (1 MB)
PARTITION_CACHE_KEYS = 1_000_000  # keys remembered per topic (rule ids, symbols) before the cache restarts


def _headers(record: Any) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") for k, v in (record.headers or ())}


def _raw(record: Any) -> RawMessage:
    key = record.key.decode("utf-8", "replace") if record.key else None
    return RawMessage(value=record.value, key=key, headers=_headers(record))


async def _raw_decoder(msg: Any) -> Any:
    """Keep bodies as bytes: validation (and dead-lettering) is ours, per message."""
    return None


async def _batch_parser(records: Any, original: Any) -> Any:
    """FastStream's batch parser, minus its per-record work: it decoded every record's headers into a
    dict (and the body list) that nothing here reads (handlers take ``raw_message``), about as costly
    as validating the event. The message is parsed from the first record (its headers for the logs),
    then given the whole batch, which is what acknowledging and rewinding (nack) work on."""
    if not isinstance(records, tuple) or len(records) <= 1:
        return await original(records)
    message = await original(records[:1])
    message.raw_message = records
    message.body = [r.value or b"" for r in records]  # what FastStream's metrics size a batch by
    return message


def _decode_all(topic: Topic, records: list[Any]) -> tuple[list[Event], dict[int, str]]:
    """The events of records with a value, and the reason of each one that is not valid (by ``id``)."""
    out: list[Event] = []
    bad: dict[int, str] = {}
    for record in records:
        try:
            out.append(decode_message(topic, RawMessage(value=record.value)))
        except ValueError as exc:
            bad[id(record)] = str(exc)
    return out, bad


def _note_rejects(records: list[Any], bad: dict[int, str], unread: dict[Any, Rejected]) -> None:
    """Keep the invalid records in ``unread`` by key, in log order: a later tombstone of the key deletes one."""
    for r in records:
        if r.value is None:
            unread.pop(r.key, None)
        elif (reason := bad.get(id(r))) is not None:
            unread[r.key if r.key is not None else (r.partition, r.offset)] = Rejected(_raw(r), reason)


async def ensure_topics(
    bootstrap: str, topics: Sequence[Topic] = ALL_TOPICS, replication: int = 1, partitions: int | None = None
) -> None:
    """Create the contract's topics (compaction where the contract says so) with ``partitions`` partitions
    each (default: the registry's, 6); existing ones are kept as they are."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="tokenpulse-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(
                name=t.name,
                num_partitions=partitions or t.partitions,
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


class _Progress:
    """What a subscription's handler is doing: running or idle, and per partition the offset after the last
    record it handled (what a commit on revocation may save)."""

    def __init__(self) -> None:
        self.idle = asyncio.Event()
        self.idle.set()
        self.handled: dict[TopicPartition, int] = {}


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """When a rebalance takes partitions away (a replica joins or leaves, a restart), wait for the batch in
    hand, then commit exactly what was handled, while the group still accepts this member's commits. Without
    it, a batch finished during the rebalance fails to commit and is handled again after it (the duplicates
    a restart or a scale step would otherwise cause)."""

    def __init__(self, subscriber: Any, progress: _Progress, group: str, wait_s: float) -> None:
        self.subscriber, self.progress, self.group, self.wait_s = subscriber, progress, group, wait_s

    async def on_partitions_revoked(self, revoked: Any) -> None:
        try:
            await asyncio.wait_for(self.progress.idle.wait(), self.wait_s)
        except TimeoutError:
            log.info("%s: a batch is still running at a rebalance; it may be redelivered", self.group)
        offsets = {tp: OffsetAndMetadata(o, "") for tp, o in self.progress.handled.items() if tp in revoked}
        for tp in revoked:
            self.progress.handled.pop(tp, None)
        consumer = getattr(self.subscriber, "consumer", None)
        if offsets and consumer is not None:
            try:
                await consumer.commit(offsets)
            except Exception as exc:  # the group moved on already: the batch is redelivered (at-least-once)
                log.warning("%s: commit on rebalance failed (%r); its last batch may be redelivered", self.group, exc)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None


# A service's subscriptions are members of one consumer group, and each member joining at start makes
# the others rejoin, which they notice at their next heartbeat: with aiokafka's 3 s interval the scoring
# service (three subscriptions) took ~6.4 s to start consuming steadily, with 1 s ~2.9 s (1/10 of the
# 10 s session timeout; docs/benchmarks.md, scoring, 2026-12-05).
HEARTBEAT_MS = 1000


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
        graceful_timeout_s: float = 25.0,
        partitions: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bootstrap = bootstrap
        self.group_prefix = group_prefix
        self.from_beginning = from_beginning
        self.replication = replication
        self.partitions = partitions
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
            # on stop, a subscriber stops fetching and waits this long for the batch its handler is on
            graceful_timeout=graceful_timeout_s,
        )
        self._started = False
        self.graceful_timeout_s = graceful_timeout_s
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("tokenpulse.bus.kafka")
        self.client_id = client_id
        # stamped on everything this instance publishes, so a `skip_own` subscription can drop it undecoded
        self.origin = uuid.uuid4().hex.encode()
        self.producer: AIOKafkaProducer | None = None
        # key -> partition per topic, valid while the topic's partition set is unchanged: aiokafka's
        # partitioner hashes in pure Python (murmur2) and copies the partition lists at every call, which
        # cost alerts ~7 % of its time (one call per firing: firings are keyed by rule)
        self._partition_cache: dict[str, tuple[frozenset[int], dict[bytes, int]]] = {}

    def group_id(self, group: str) -> str:
        return f"{self.group_prefix}-{group}"

    def _offset_reset(self, sub: Subscription) -> Literal["latest", "earliest"]:
        if sub.tail:
            return "latest"
        return "earliest" if (self.from_beginning or sub.broadcast) else "latest"

    def _consumers(self) -> list[list[Subscription]]:
        """The subscriptions grouped into Kafka consumers: one consumer per (group, where a new group starts
        reading) for all the topics of that group, a broadcast subscription on its own.

        A service's subscriptions share its consumer group; as one consumer each, every member joining made
        the others rejoin at their next heartbeat, so the scoring service (three topics) took 1.6-3.2 s to
        start consuming and a replica joining rebalanced three members (docs/benchmarks.md, scoring,
        2026-12-05). One consumer over the topics joins once. Tail subscriptions (read from the end) need
        their own consumer: the offset reset is per consumer."""
        out: list[list[Subscription]] = []
        shared: dict[tuple[str, str], list[Subscription]] = {}
        for sub in self.subscriptions:
            key = (sub.group, self._offset_reset(sub))
            members = None if sub.broadcast else shared.get(key)
            if members is not None and all(m.topic is not sub.topic for m in members):
                members.append(sub)
                continue
            out.append([sub])
            if not sub.broadcast and key not in shared:
                shared[key] = out[-1]
        return out

    async def start(self) -> None:
        await ensure_topics(self.bootstrap, replication=self.replication, partitions=self.partitions)
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            # aiokafka's default 16 KB batches hold ~30 events; with idempotence one request is in flight
            # per broker, so a 5,000-event publish waited for ~150 sequential acks (see docs/benchmarks.md)
            max_batch_size=PRODUCER_BATCH_BYTES,
        )
        await self.producer.start()
        for subs in self._consumers():
            # broadcast: no group, every partition from the beginning at every start, nothing committed;
            # tail: the same from the end (only what is published from now on)
            first = subs[0]
            progress = _Progress()
            # a short wait: a handler may be blocked on a warm-up, and the whole group waits for this member
            wait_s = self.graceful_timeout_s if any(s.finish_on_rebalance for s in subs) else 2.0
            group = None if first.broadcast else self.group_id(first.group)
            listener = None if group is None else _CommitOnRevoke(None, progress, group, wait_s)
            subscriber = self.broker.subscriber(
                *(s.topic.name for s in subs),
                group_id=group,
                batch=True,
                max_records=max(s.max_batch for s in subs),
                batch_timeout_ms=100,
                heartbeat_interval_ms=HEARTBEAT_MS,
                auto_offset_reset=self._offset_reset(first),
                ack_policy=AckPolicy.ACK_FIRST if first.broadcast else AckPolicy.NACK_ON_ERROR,
                decoder=_raw_decoder,
                parser=_batch_parser,
                listener=listener,
            )
            if listener is not None:
                listener.subscriber = subscriber
            subscriber(self._make_handler(subs, progress))
        await self.broker.start()
        self._started = True

    async def stop_consuming(self) -> None:
        """Graceful shutdown, step 1: stop fetching, let the handlers finish the batches they are on (up to
        ``graceful_timeout_s``), commit their offsets and leave the consumer groups. Publishing still works."""
        if self._started:
            await self.broker.stop()
            self._started = False

    async def stop(self) -> None:
        await self.stop_consuming()  # consumers first: a handler still running may publish
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

    async def read_log(
        self,
        topic: Topic,
        since_ms: int | None = None,
        until_group: str | None = None,
        rejected: list[Rejected] | None = None,
    ) -> list[Event]:
        await ensure_topics(self.bootstrap, [topic], replication=self.replication, partitions=self.partitions)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="tokenpulse-log",
        )
        await consumer.start()
        events: list[Event] = []
        unread: dict[Any, Rejected] = {}
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
                in_range = [r for tp, records in batch.items() for r in records if r.offset < end[tp]]
                # validation off the event loop: a long read must not starve heartbeats of the running consumers
                decoded, bad = await asyncio.to_thread(_decode_all, topic, [r for r in in_range if r.value is not None])
                events.extend(decoded)
                if rejected is not None:
                    _note_rejects(in_range, bad, unread)
                for tp in list(remaining):
                    if await consumer.position(tp) >= end[tp]:
                        remaining.discard(tp)
        finally:
            await consumer.stop()
        if rejected is not None:
            rejected.extend(unread.values())
        return events

    def _make_handler(self, subs: list[Subscription], progress: _Progress) -> Any:
        """The handler of one consumer: its batch split by topic, each part handled by its subscription in
        registration order. A transient failure rewinds only that part and the parts after it; the parts
        already handled are committed with the next batch."""
        bus = self

        async def handle_batch(message: KafkaMessage) -> None:
            progress.idle.clear()
            try:
                records = message.raw_message
                if not isinstance(records, tuple):
                    records = (records,)
                if len(subs) == 1:
                    await _handle(subs[0], message, records)
                    return
                parts: dict[str, list[Any]] = {s.topic.name: [] for s in subs}
                for r in records:
                    parts[r.topic].append(r)
                for i, sub in enumerate(subs):
                    if parts[sub.topic.name]:
                        try:
                            await _handle(sub, message, tuple(parts[sub.topic.name]))
                        except TransientError:
                            message.raw_message = tuple(r for s in subs[i:] for r in parts[s.topic.name])
                            raise
            finally:
                progress.idle.set()

        async def _handle(sub: Subscription, message: KafkaMessage, records: tuple[Any, ...]) -> None:
            if not sub.broadcast:
                bus._record_lag(sub, message, records)
            events: list[Event] = []
            dead: list[DeadLetterEvent] = []
            first: Any = None
            parents: dict[bytes, None] = {}  # distinct traceparents: a publisher stamps one per batch
            for record in records:
                if record.value is None:  # tombstone on a compacted topic: the deletion event came first
                    continue
                if sub.skip_own and (ORIGIN, bus.origin) in (record.headers or ()):
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
                    step = sub.max_batch  # the consumer's batches may be larger (another topic's maximum)
                    for k in range(0, max(len(events), 1), step):
                        await bus.deliver(sub, events[k : k + step], dead if k == 0 else [])
                for r in records:  # handled: a commit on revocation may now save it
                    tp = TopicPartition(r.topic, r.partition)
                    progress.handled[tp] = max(progress.handled.get(tp, 0), r.offset + 1)
            except TransientError as exc:
                log.warning("%s: transient failure (%s); batch will be redelivered", sub.group, exc)
                await asyncio.sleep(bus.backoff_s * 10)
                raise

        names = "_".join(s.topic.name.replace(".", "_").replace("-", "_") for s in subs)
        handle_batch.__name__ = f"{subs[0].group}_{names}"
        return handle_batch

    def _record_lag(self, sub: Subscription, message: Any, records: Sequence[Any]) -> None:
        """Consumer lag per partition at this batch: the partition's end (as last fetched) minus the
        offset after this batch's last record there."""
        consumer = getattr(message, "consumer", None)
        if consumer is None or not records:
            return
        last: dict[int, int] = {}
        for r in records:
            last[r.partition] = max(last.get(r.partition, -1), r.offset)
        for partition, offset in last.items():
            with contextlib.suppress(Exception):
                end = consumer.highwater(TopicPartition(sub.topic.name, partition))
                if end is not None:
                    CONSUMER_LAG.labels(sub.group, sub.topic.name, str(partition)).set(max(0, end - offset - 1))

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
            # Batches built here, one run per partition (the producer's own partitioner picks it, so keys
            # land where a per-message send would put them, in order): aiokafka's per-message send() cost
            # ~5x as much per event (see docs/benchmarks.md, scoring).
            await producer.partitions_for(topic.name)  # waits for the topic's metadata
            origin = (ORIGIN, self.origin)
            encoded: dict[int, list[tuple[str, bytes]]] = {}
            partitions = self._partitions_by_key(producer, topic.name)
            by_partition: dict[int, list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]] = {}
            for value, key, headers in messages:
                hdrs = encoded.get(id(headers))
                if hdrs is None:
                    hdrs = [(k, v.encode()) for k, v in {**headers, **carrier}.items()]
                    hdrs.append(origin)
                    encoded[id(headers)] = hdrs
                partition = partitions.get(key) if key is not None else None
                if partition is None:
                    partition = producer._partition(topic.name, None, key, value, key, value)
                    if key is not None:
                        if len(partitions) >= PARTITION_CACHE_KEYS:
                            partitions.clear()
                        partitions[key] = partition
                by_partition.setdefault(partition, []).append((value, key, hdrs))
            futures = []
            for partition, records in by_partition.items():
                batch = producer.create_batch()
                for value, key, hdrs in records:
                    if batch.append(key=key, value=value, timestamp=None, headers=hdrs) is None:
                        if batch.record_count() == 0:  # larger than a batch: on its own, as before
                            futures.append(await producer.send(topic.name, value, key, partition, headers=hdrs))
                            continue
                        batch.close()
                        futures.append(await producer.send_batch(batch, topic.name, partition=partition))
                        batch = producer.create_batch()
                        if batch.append(key=key, value=value, timestamp=None, headers=hdrs) is None:
                            futures.append(await producer.send(topic.name, value, key, partition, headers=hdrs))
                if batch.record_count():
                    batch.close()
                    futures.append(await producer.send_batch(batch, topic.name, partition=partition))
            await asyncio.gather(*futures)
        EVENTS_PUBLISHED.labels(topic.name).inc(len(messages))

    def _partitions_by_key(self, producer: AIOKafkaProducer, topic: str) -> dict[bytes, int]:
        """The key -> partition cache of ``topic``, emptied when its partitions change (the partitioner
        maps a key over all of a topic's partitions, so the mapping holds exactly as long as they do)."""
        current = frozenset(producer.client.cluster.partitions_for_topic(topic) or ())
        cached = self._partition_cache.get(topic)
        if cached is None or cached[0] != current:
            cached = (current, {})
            self._partition_cache[topic] = cached
        return cached[1]

    async def publish(self, topic: Topic, events: Sequence[Event]) -> None:
        for event in events:
            if not isinstance(event, topic.model):
                raise TypeError(f"{topic.name} carries {topic.model.__name__}, not {type(event).__name__}")
        await self._send(topic, [(encode_event(e), e.partition_key().encode(), JSON_HEADERS) for e in events])

    async def publish_raw(self, topic: Topic, messages: Sequence[RawMessage]) -> None:
        await self._send(topic, [(m.value or b"", m.key.encode() if m.key else None, m.headers) for m in messages])

    async def publish_tombstone(self, topic: Topic, key: str) -> None:
        await self._send(topic, [(None, key.encode(), {})])
