"""Kafka adapter of the bus port: one client path, aiokafka for producing and for consuming.

Why aiokafka alone (FastStream, used before for the consumers, is not used here): measured side by side
on this project's VM (``bench/bus_paths.py``, figures in docs/benchmarks.md, "Bus client path"), a
plain ``getmany`` loop consumed and committed faster than a FastStream batch subscriber and answered on a
quiet topic in a fraction of the time (the subscriber sleeps a whole batch timeout after an empty poll),
and aiokafka's ``send_batch`` published faster than FastStream's ``publish_batch``. Beyond speed, each
guarantee below needed a way around FastStream rather than through it: its batch publish puts one batch
on one partition (the keys had to be mapped to partitions with aiokafka anyway), its batch
acknowledgement commits everything fetched and its nack rewinds the whole batch (rewinding one topic's
part meant rewriting its message), and the commit on revocation needed the consumer it hides. What
FastStream added on top (its ``faststream_*`` metrics) the ``tokenpulse_*`` families already cover.

* producer: one idempotent aiokafka producer (acks=all), key = the event's partition key (the token
  symbol), placed by the producer's own partitioner (murmur2, as the Java client) and sent as one batch
  per partition; one PRODUCER span per published batch, its W3C context in every message's headers;
* consumers: one aiokafka consumer per consumer group (``PREFIX-SERVICE``) over all its shared topics,
  one per broadcast or tail subscription; offsets are committed after the handlers returned, exactly the
  ones handled; a :class:`TransientError` rewinds the failing topic's part of the batch (and the parts
  after it) so it is redelivered; invalid messages and events a handler keeps failing on go to the
  dead-letter topic with the reason and are then committed, so a poison message never blocks a partition;
  a rebalance waits for the batch in hand and its commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from typing import Any, Literal, TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import ConsumerStoppedError, KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind

from tokenpulse_shared.bus.base import (
    Bus,
    Delivery,
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
ORIGIN = "tp-origin"  # header: the publishing bus instance (see Delivery.TAIL_OTHERS)
PRODUCER_BATCH_BYTES = 512 * 1024  # below the broker's default message.max.bytes (1 MB)
PARTITION_CACHE_KEYS = 1_000_000  # keys remembered per topic (rule ids, symbols) before the cache restarts
FETCH_WAIT_MS = 100  # the longest a poll waits for records; a record arriving meanwhile returns it at once
REBALANCE_WAIT_S = 2.0  # how long a rebalance waits for a batch in hand (handlers may be blocked on a warm-up)
SETTLE_S = 30.0  # how long start() waits for a broadcast or tail consumer's start positions
# A service's subscriptions join one group; a member joining makes the others rejoin at their next heartbeat,
# so a short interval (1/10 of the 10 s session timeout) lets a service start consuming sooner.
HEARTBEAT_MS = 1000

_Record: TypeAlias = Any  # aiokafka's ConsumerRecord; aiokafka ships no type information


def _headers(record: Any) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") for k, v in (record.headers or ())}


def _raw(record: Any) -> RawMessage:
    key = record.key.decode("utf-8", "replace") if record.key else None
    return RawMessage(value=record.value, key=key, headers=_headers(record))


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


class _KeyPartitions:
    """key -> partition per topic with the producer's partitioner, remembered while the topic's partitions are
    unchanged (the partitioner maps a key over all of them): its pure-Python hash, once per message, cost more
    than the rest of a publish."""

    def __init__(self, partitioner: DefaultPartitioner) -> None:
        self.partitioner = partitioner
        self.cache: dict[str, tuple[list[int], dict[bytes, int]]] = {}

    def of(self, topic: str, partitions: list[int]) -> Any:
        cached = self.cache.get(topic)
        if cached is None or cached[0] != partitions:
            cached = self.cache[topic] = (partitions, {})
        known = cached[1]
        partitioner = self.partitioner

        def partition(key: bytes | None) -> int:
            if key is None:
                return int(partitioner(None, partitions, partitions))
            p = known.get(key)
            if p is None:
                if len(known) >= PARTITION_CACHE_KEYS:
                    known.clear()
                p = known[key] = partitioner(key, partitions, partitions)
            return p

        return partition


class _FinishBatchOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """When a rebalance takes partitions away (a replica joins or leaves, a restart), wait for the batch in hand
    and its commit, which the group still accepts from this member until the callback returns. Without it, a
    batch finished during the rebalance fails to commit and is handled again by the partitions' next owner.
    (Hooks for state owned per partition would be called here too.)"""

    def __init__(self, idle: asyncio.Event, group: str, wait_s: float) -> None:
        self.idle, self.group, self.wait_s = idle, group, wait_s

    async def on_partitions_revoked(self, revoked: Any) -> None:
        try:
            await asyncio.wait_for(self.idle.wait(), self.wait_s)
        except TimeoutError:
            log.info("%s: a batch is still running at a rebalance; it may be redelivered", self.group)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None


class _Consumer:
    """One aiokafka consumer over the topics of ``subs`` (all of one delivery and group) and the loop that hands
    its batches to their handlers."""

    def __init__(self, bus: KafkaBus, subs: list[Subscription]) -> None:
        self.bus, self.subs = bus, subs
        first = subs[0]
        self.shared = first.delivery is Delivery.SHARED
        self.group = first.group
        self.name = f"{first.group}:{','.join(s.topic.name for s in subs)}"
        self.idle = asyncio.Event()
        self.idle.set()
        self.stopping = False
        self.consumer: AIOKafkaConsumer | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        bus, first = self.bus, self.subs[0]
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bus.bootstrap,
            client_id=bus.client_id,
            group_id=bus.group_id(first.group) if self.shared else None,
            enable_auto_commit=False,
            auto_offset_reset=bus.offset_reset(first),
            heartbeat_interval_ms=HEARTBEAT_MS,
        )
        listener = None
        if self.shared:
            finish = any(s.finish_batch_on_rebalance for s in self.subs)
            wait_s = bus.graceful_timeout_s if finish else REBALANCE_WAIT_S
            listener = _FinishBatchOnRevoke(self.idle, bus.group_id(first.group), wait_s)
        self.consumer.subscribe(topics=[s.topic.name for s in self.subs], listener=listener)
        await self.consumer.start()
        if not self.shared:
            await self._settle()
        self.task = asyncio.create_task(self._run(), name=f"bus:{self.name}")

    async def _settle(self) -> None:
        """Resolve a groupless consumer's start positions now, so that a tail receives everything published
        after :meth:`KafkaBus.start` returned."""
        consumer = self.consumer
        assert consumer is not None
        try:
            async with asyncio.timeout(SETTLE_S):
                while not consumer.assignment():  # noqa: ASYNC110 - aiokafka signals an assignment by no event
                    await asyncio.sleep(0.05)
                for tp in consumer.assignment():
                    await consumer.position(tp)
        except TimeoutError:
            log.warning("%s: start positions not resolved in %.0f s; consuming anyway", self.name, SETTLE_S)

    async def stop(self, timeout: float) -> None:
        """Stop fetching, let the batch in hand finish and commit (up to ``timeout``), leave the group."""
        self.stopping = True
        if self.task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self.task), timeout)
            except TimeoutError:
                log.warning("%s: a batch was still running after %.0f s; it will be redelivered", self.name, timeout)
                self.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.task
        if self.consumer is not None:
            await self.consumer.stop()

    async def _run(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        max_records = max(s.max_batch for s in self.subs)
        while not self.stopping:
            try:
                batch = await consumer.getmany(timeout_ms=FETCH_WAIT_MS, max_records=max_records)
            except ConsumerStoppedError:
                return
            except KafkaError as exc:  # the client reconnects by itself; try again shortly
                log.warning("%s: fetch failed (%r); retrying", self.name, exc)
                await asyncio.sleep(1.0)
                continue
            if not batch:
                continue
            try:
                await self._handle(batch)
            except Exception:  # a fault of ours, not a handler's (those rewind): keep the consumer alive, loudly
                log.exception("%s: a fetched batch could not be handled", self.name)
                await asyncio.sleep(1.0)

    async def _handle(self, batch: dict[TopicPartition, list[_Record]]) -> None:
        """Each topic's part of the batch to its subscription, in registration order; then commit what was
        handled. A failure rewinds that part and the parts after it (the earlier ones stay committed)."""
        self.idle.clear()
        try:
            if self.shared:
                self._record_lag(batch)
            parts: dict[str, dict[TopicPartition, list[_Record]]] = {}
            for tp, records in batch.items():
                parts.setdefault(tp.topic, {})[tp] = records
            handled: dict[TopicPartition, int] = {}
            for i, sub in enumerate(self.subs):
                part = parts.get(sub.topic.name)
                if not part:
                    continue
                try:
                    await self.bus._consume(sub, [r for records in part.values() for r in records])
                except Exception as exc:
                    await self._rewind(parts, self.subs[i:], handled, exc)
                    return
                handled.update((tp, records[-1].offset + 1) for tp, records in part.items())
            await self._commit(handled)
        finally:
            self.idle.set()

    async def _rewind(
        self,
        parts: dict[str, dict[TopicPartition, list[_Record]]],
        failed: list[Subscription],
        handled: dict[TopicPartition, int],
        exc: Exception,
    ) -> None:
        if isinstance(exc, TransientError):
            log.warning("%s: transient failure (%s); the batch will be redelivered", self.name, exc)
        else:  # e.g. the dead letters could not be published: the batch is not done either
            log.error("%s: batch failed (%r); it will be redelivered", self.name, exc)
        assert self.consumer is not None
        for sub in failed:
            for tp, records in parts.get(sub.topic.name, {}).items():
                with contextlib.suppress(KafkaError):  # no longer assigned: its next owner reads it
                    self.consumer.seek(tp, records[0].offset)
        await self._commit(handled)
        await asyncio.sleep(self.bus.backoff_s * 10)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not self.shared or not offsets:
            return
        assert self.consumer is not None
        assigned = self.consumer.assignment()
        mine = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if not mine:
            return
        try:
            await self.consumer.commit(mine)
        except KafkaError as exc:  # the group moved on (rebalance) or the broker is away: redelivered later
            log.info("%s: commit failed (%r); the batch may be redelivered", self.name, exc)

    def _record_lag(self, batch: dict[TopicPartition, list[_Record]]) -> None:
        """Consumer lag per partition at this batch: the partition's end (as last fetched) minus the offset
        after this batch's last record there."""
        assert self.consumer is not None
        for tp, records in batch.items():
            end = self.consumer.highwater(tp)
            if end is not None and records:
                CONSUMER_LAG.labels(self.group, tp.topic, str(tp.partition)).set(max(0, end - records[-1].offset - 1))


def _trace_parent(records: Sequence[_Record]) -> tuple[Context | None, list[Link]]:
    """The first message's trace continues through the handler (its publishes become children); the other
    traces in the batch (up to MAX_LINKS distinct ones) are linked, as OpenTelemetry's messaging conventions
    suggest for batches. Only those headers are parsed: per message that cost more than validating the event."""
    if not records:
        return None, []
    parents: dict[bytes, None] = {}  # distinct traceparents: a publisher stamps one per batch
    for record in records[1:]:
        if len(parents) >= MAX_LINKS:
            break
        for k, v in record.headers or ():
            if k == "traceparent":
                parents[v] = None
                break
    parent = propagate.extract(_headers(records[0]))
    others = [propagate.extract({"traceparent": v.decode("ascii", "replace")}) for v in parents]
    links = [Link(trace.get_current_span(c).get_span_context()) for c in others]
    return parent, [link for link in links if link.context.is_valid]


class KafkaBus(Bus):
    """The distributed-mode bus."""

    tracer_name = "tokenpulse.bus.kafka"

    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str = "tokenpulse",
        group_prefix: str = "tokenpulse",
        from_beginning: bool = True,
        replication: int = 1,
        graceful_timeout_s: float = 25.0,
        partitions: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.group_prefix = group_prefix
        self.from_beginning = from_beginning
        self.replication = replication
        self.graceful_timeout_s = graceful_timeout_s
        self.partitions = partitions
        # stamped on everything this instance publishes, so a TAIL_OTHERS subscription can drop it undecoded
        self.origin = uuid.uuid4().hex.encode()
        self.partitioner = DefaultPartitioner()
        self._keys = _KeyPartitions(self.partitioner)
        self.producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._running: list[_Consumer] = []

    def group_id(self, group: str) -> str:
        return f"{self.group_prefix}-{group}"

    def offset_reset(self, sub: Subscription) -> Literal["latest", "earliest"]:
        """Where a consumer without committed offsets starts (a groupless one: at every start)."""
        if sub.delivery is Delivery.BROADCAST:
            return "earliest"
        if sub.delivery is Delivery.SHARED and self.from_beginning:
            return "earliest"
        return "latest"

    def _consumers(self) -> list[list[Subscription]]:
        """The subscriptions grouped into Kafka consumers: one consumer per shared group for all the topics of
        that group (a topic subscribed twice in one group: a second member), one per other subscription.

        A member joining a group makes the others rejoin; one consumer over a service's topics joins once,
        so a service starts consuming sooner and a replica joining rebalances one member, not one per topic."""
        out: list[list[Subscription]] = []
        shared: dict[str, list[Subscription]] = {}
        for sub in self.subscriptions:
            members = shared.get(sub.group) if sub.delivery is Delivery.SHARED else None
            if members is not None and all(m.topic is not sub.topic for m in members):
                members.append(sub)
                continue
            out.append([sub])
            if sub.delivery is Delivery.SHARED and sub.group not in shared:
                shared[sub.group] = out[-1]
        return out

    async def start(self) -> None:
        await ensure_topics(self.bootstrap, replication=self.replication, partitions=self.partitions)
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=f"{self.client_id}-admin")
        await self._admin.start()
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            partitioner=self.partitioner,
            # aiokafka's default 16 KB batches hold ~30 events; with idempotence one request is in flight
            # per broker, so a large publish would wait for one acknowledgement per small batch in turn
            max_batch_size=PRODUCER_BATCH_BYTES,
        )
        await self.producer.start()
        self._running = [_Consumer(self, subs) for subs in self._consumers()]
        await asyncio.gather(*(c.start() for c in self._running))

    async def stop_consuming(self) -> None:
        """Graceful shutdown, step 1: stop fetching, let the handlers finish the batches they are on (up to
        ``graceful_timeout_s``), commit their offsets and leave the consumer groups. Publishing still works."""
        running, self._running = self._running, []
        await asyncio.gather(*(c.stop(self.graceful_timeout_s) for c in running))

    async def stop(self) -> None:
        await self.stop_consuming()  # consumers first: a handler still running may publish
        if self.producer is not None:
            await self.producer.stop()  # flushes what is buffered
            self.producer = None
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    async def ready(self) -> bool:
        if self._admin is None:
            return False
        try:
            await asyncio.wait_for(self._admin.describe_cluster(), 2.0)
            return True
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

    async def _consume(self, sub: Subscription, records: list[_Record]) -> None:
        """One topic's part of a fetched batch: decoded (invalid ones dead-lettered), then handed to ``sub``'s
        handler under one CONSUMER span, in chunks of its ``max_batch``."""
        events: list[Event] = []
        dead: list[DeadLetterEvent] = []
        kept: list[_Record] = []
        own = (ORIGIN, self.origin)
        for record in records:
            if record.value is None:  # tombstone on a compacted topic: the deletion event came first
                continue
            if sub.delivery is Delivery.TAIL_OTHERS and own in (record.headers or ()):
                continue
            kept.append(record)
            try:
                events.append(decode_message(sub.topic, RawMessage(value=record.value)))
            except ValueError as exc:
                dead.append(dead_letter_for(sub.topic, sub.group, str(exc), raw=_raw(record)))
        if not kept:
            return
        parent, links = _trace_parent(kept)
        with self.tracer.start_as_current_span(
            f"{sub.topic.name} process",
            context=parent,
            kind=SpanKind.CONSUMER,
            links=links,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": sub.topic.name,
                "messaging.consumer.group.name": self.group_id(sub.group),
                "messaging.batch.message_count": len(kept),
            },
        ):
            step = sub.max_batch  # the consumer's batches may be larger (another topic's maximum)
            for k in range(0, max(len(events), 1), step):
                await self.deliver(sub, events[k : k + step], dead if k == 0 else [])

    def _producer(self) -> AIOKafkaProducer:
        if self.producer is None:
            raise RuntimeError("the Kafka bus is not started")
        return self.producer

    async def _send(self, topic: Topic, messages: list[tuple[bytes | None, bytes | None, dict[str, str]]]) -> None:
        """Send (value, key, headers) messages under one PRODUCER span, one producer batch per partition (in
        publishing order within it); returns once the broker has them all."""
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
            partition_of = self._keys.of(topic.name, sorted(await producer.partitions_for(topic.name)))
            encoded: dict[int, list[tuple[str, bytes]]] = {}
            by_partition: dict[int, list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]] = {}
            for value, key, headers in messages:
                hdrs = encoded.get(id(headers))
                if hdrs is None:
                    hdrs = encoded[id(headers)] = [(k, v.encode()) for k, v in {**headers, **carrier}.items()]
                    hdrs.append((ORIGIN, self.origin))
                by_partition.setdefault(partition_of(key), []).append((value, key, hdrs))
            futures = []
            for partition, records in by_partition.items():
                futures += await self._send_partition(producer, topic.name, partition, records)
            await asyncio.gather(*futures)
        EVENTS_PUBLISHED.labels(topic.name).inc(len(messages))

    @staticmethod
    async def _send_partition(
        producer: AIOKafkaProducer,
        topic: str,
        partition: int,
        records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]],
    ) -> list[Any]:
        """Queue ``records`` for one partition as few producer batches as their size allows; the futures of
        the broker's acknowledgements."""
        futures = []
        batch = producer.create_batch()
        for value, key, hdrs in records:
            if batch.append(key=key, value=value, timestamp=None, headers=hdrs) is not None:
                continue
            if batch.record_count():  # full: send it, start the next
                batch.close()
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None, headers=hdrs) is not None:
                    continue
            # larger than a batch on its own: a message by itself
            futures.append(await producer.send(topic, value, key, partition, headers=hdrs))
        if batch.record_count():
            batch.close()
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures

    async def publish(self, topic: Topic, events: Sequence[Event]) -> None:
        for event in events:
            if not isinstance(event, topic.model):
                raise TypeError(f"{topic.name} carries {topic.model.__name__}, not {type(event).__name__}")
        await self._send(topic, [(encode_event(e), e.partition_key().encode(), JSON_HEADERS) for e in events])

    async def publish_raw(self, topic: Topic, messages: Sequence[RawMessage]) -> None:
        await self._send(topic, [(m.value or b"", m.key.encode() if m.key else None, m.headers) for m in messages])

    async def publish_tombstone(self, topic: Topic, key: str) -> None:
        await self._send(topic, [(None, key.encode(), {})])
