"""Kafka adapter of the bus port, on FastStream's ``KafkaBroker`` (aiokafka underneath): one client path.

FastStream is the project's Kafka framework (typed events over Kafka, faststream + aiokafka); everything this
adapter publishes goes through the broker's ``publish_batch`` and everything it consumes through the broker's
batch subscribers, with FastStream's and aiokafka's public APIs only:

* publishing: ``KafkaBroker.publish_batch`` with an explicit partition per call (FastStream sends a batch to
  one partition), each message keeping its key (``KafkaPublishMessage``); the key, the event's partition key
  (the token symbol), is placed by aiokafka's ``DefaultPartitioner`` (murmur2, as the Java client), so other
  producers of the same keys put a token where we do. Idempotent producer (acks=all); one PRODUCER span per
  published batch, its W3C context in every message's headers;
* consuming: one batch subscriber per consumer group (``PREFIX-SERVICE``) over all its shared topics, one per
  broadcast or tail subscription. ``AckPolicy.MANUAL``: the handler commits (``message.ack()``) after every
  part of the batch was handled, and a part that failed (a :class:`TransientError`, or the dead letters could
  not be published) is first rewound with ``message.consumer.seek`` — that topic's part and the parts after
  it, not the parts already handled — so the commit saves exactly what was handled and the rest is
  redelivered. Committing inside the handler is the deliberate choice: FastStream's own policies commit after
  the handler returned (outside the window a rebalance waits for) and nack the whole batch. Invalid messages
  and events a handler keeps failing on go to the dead-letter topic with the reason and are then committed,
  so a poison message never blocks a partition. The rebalance ``listener=`` waits for the batch in hand and
  its commit (``finish_batch_on_rebalance``: up to the graceful timeout);
* latency: FastStream's batch subscriber sleeps ``batch_timeout_ms`` after a poll that found nothing, so on a
  quiet topic a message waits up to that long before it is even fetched: :data:`BATCH_TIMEOUT_MS` keeps that
  short (docs/benchmarks.md, "Bus client path");
* FastStream's hooks, as documented: ``decoder=`` keeps bodies as bytes (validation is the bus's, per
  message), ``parser=`` wraps FastStream's own batch parser for header bytes it cannot decode. Its Prometheus
  middleware is not installed: its ``faststream_*`` families count what the ``tokenpulse_*`` ones count
  (events consumed and published, batch time, lag) and no dashboard reads them.

The one documented exception, where FastStream has no API: aiokafka's admin client creates the topics (with
compaction where the contract says so) and reads a topic's partitions (to place keys) and a group's committed
offsets; a plain aiokafka consumer reads a topic's past by partition and offset (:meth:`KafkaBus.read_log`);
lag is the consumer's ``highwater`` (the consumer FastStream exposes on each message), and the start
positions of a broadcast or tail subscriber are resolved on the consumer its subscriber exposes
(``subscriber.consumer``) so that a tail receives everything published after :meth:`KafkaBus.start`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal, TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner
from faststream.kafka import KafkaBroker, KafkaPublishMessage
from faststream.kafka import Topic as KafkaTopic
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.exceptions import BatchBufferOverflowException
from faststream.middlewares import AckPolicy
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind

from tokenpulse_shared.batches import RowBatch
from tokenpulse_shared.bus.base import (
    Assignment,
    Bus,
    Delivery,
    LogRange,
    RawMessage,
    Rejected,
    RowPlacer,
    Subscription,
    TransientError,
    dead_letter_for,
    decode_message,
    encode_event,
    publish_span,
)
from tokenpulse_shared.events import DeadLetterEvent, Event
from tokenpulse_shared.telemetry import CONSUMER_LAG, EVENTS_PUBLISHED
from tokenpulse_shared.topics import ALL_TOPICS, Topic

log = logging.getLogger(__name__)

JSON_HEADERS = {"content-type": "application/json"}
MAX_LINKS = 16
ORIGIN = "tp-origin"  # header: the publishing bus instance (see Delivery.TAIL_OTHERS)
COPY = "tp-copy"  # header: a v1 event also published as a v2 row (see Bus.publish_v1_copy)
COPY_HEADERS = {**JSON_HEADERS, COPY: "v2"}
PRODUCER_BATCH_BYTES = 512 * 1024  # below the broker's default message.max.bytes (1 MB)
SIZE_SAMPLE_ROWS = 256  # rows of a large row batch encoded first to size the messages it is cut into
RECORD_OVERHEAD_BYTES = 64  # a record's framing in a batch, beyond its key, value and headers (an estimate)
PARTITION_CACHE_KEYS = 1_000_000  # keys remembered per topic (rule ids, symbols) before the cache restarts
PARTITIONS_TTL_S = 60.0  # how long a topic's partition list is trusted before it is read again
LOG_FETCH_EVENTS = 5000  # per-event messages per fetch of a log read
LOG_FETCH_BATCHES = 50  # row-batch messages per fetch of a log read (each up to 10,000 rows)
# the subscriber's poll timeout, and its sleep after an empty poll: the most a quiet topic's message waits
BATCH_TIMEOUT_MS = 10
REVOKE_POSITION_WAIT_S = 0.5  # how long a revoke waits for a partition's position before leaving it out
REBALANCE_WAIT_S = 2.0  # how long a rebalance waits for a batch in hand (handlers may be blocked on a warm-up)
SETTLE_S = 30.0  # how long start() waits for a broadcast or tail consumer's start positions
# A service's subscriptions join one group; a member joining makes the others rejoin at their next heartbeat,
# so a short interval (1/10 of the default 10 s session timeout) lets a service start consuming sooner.
HEARTBEAT_MS = 1000

_Record: TypeAlias = Any  # aiokafka's ConsumerRecord; aiokafka ships no type information
_Outgoing: TypeAlias = tuple[bytes | None, bytes | None, dict[str, str]]  # value, key, headers
# co-partitioned groups: range lines up the same partitions of each topic on one member; round-robin second, so a
# member of the previous release (round-robin only) and a new one agree on it during a rolling upgrade
CO_PARTITIONED_ASSIGNORS = (RangePartitionAssignor, RoundRobinPartitionAssignor)
DEFAULT_ASSIGNORS = (RoundRobinPartitionAssignor,)  # aiokafka's and FastStream's default: the best balance


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
                topic_configs={**({"cleanup.policy": "compact"} if t.compacted else {}), **dict(t.config)},
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
    """key -> partition per topic with aiokafka's default partitioner, remembered while the topic's partitions are
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


async def _no_body(message: Any) -> Any:
    """FastStream's decoder, replaced through its ``decoder=`` hook: the bodies stay bytes, validated (and
    dead-lettered) per message by the bus; the default decoded every record of a batch again."""
    return None


async def _tolerant_parser(records: Any, original: Any) -> Any:
    """FastStream's own batch parser (through its ``parser=`` hook), except for a batch holding a header value
    it cannot decode (another producer's bytes, or none at all): without this FastStream drops the batch
    unhandled. Such a batch is parsed again from copies of its records whose header values are made UTF-8;
    keys, values, partitions and offsets are the records' own."""
    try:
        return await original(records)
    except (UnicodeDecodeError, AttributeError):
        return await original(tuple(map(_utf8_headers, records)))


def _utf8_headers(record: _Record) -> _Record:
    headers = [(k, (v or b"").decode("utf-8", "replace").encode()) for k, v in record.headers or ()]
    return dataclasses.replace(record, headers=headers)


_Parts: TypeAlias = dict[str, dict[tuple[str, int], list[_Record]]]  # topic -> (topic, partition) -> records


def _by_topic(records: Sequence[_Record]) -> _Parts:
    """A batch's records by topic and partition, in fetch order (they come partition by partition)."""
    parts: _Parts = {}
    last: tuple[str, int] | None = None
    run: list[_Record] = []
    for r in records:
        where = (r.topic, r.partition)
        if where != last:
            run = parts.setdefault(r.topic, {}).setdefault(where, [])
            last = where
        run.append(r)
    return parts


def _rewind(consumer: Any, parts: Sequence[dict[tuple[str, int], list[_Record]]]) -> None:
    """Seek each partition of ``parts`` back to its first record there, so those records come again."""
    for part in parts:
        for (topic, partition), records in part.items():
            with contextlib.suppress(KafkaError):  # no longer assigned: its next owner reads it
                consumer.seek(TopicPartition(topic, partition), records[0].offset)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka's rebalance listener on one subscriber's consumer. When a rebalance takes partitions away (a
    replica joins or leaves, a restart), wait for the batch in hand and its commit (made in the handler), which
    the group still accepts from this member until the callback returns; without it, a batch finished during
    the rebalance fails to commit and is handled again by the partitions' next owner. Then the subscriptions'
    ``on_revoke`` hooks; once the new assignment is in, their ``on_assign`` hooks (state owned per partition)."""

    def __init__(self, subscriber: _Subscriber, wait_s: float) -> None:
        self.subscriber, self.wait_s = subscriber, wait_s

    async def on_partitions_revoked(self, revoked: Any) -> None:
        try:
            await asyncio.wait_for(self.subscriber.idle.wait(), self.wait_s)
        except TimeoutError:
            log.info("%s: a batch is still running at a rebalance; it may be redelivered", self.subscriber.name)
        await self.subscriber.call_hooks("on_revoke", revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.subscriber.call_hooks("on_assign", assigned)


class _Subscriber:
    """One FastStream batch subscriber over the topics of ``subs`` (all of one delivery and group) and its
    handler: each topic's part of a batch to its subscription, in registration order, then the commit."""

    def __init__(self, bus: KafkaBus, subs: list[Subscription]) -> None:
        self.bus, self.subs = bus, subs
        first = subs[0]
        self.shared = first.delivery is Delivery.SHARED
        self.group = first.group
        self.name = f"{first.group}:{','.join(s.topic.name for s in subs)}"
        self.idle = asyncio.Event()
        self.idle.set()
        self.subscriber: Any = None
        self.co_partitioned = self.shared and any(s.co_partitioned for s in subs)

    def register(self, broker: KafkaBroker) -> None:
        bus, first = self.bus, self.subs[0]
        listener = None
        if self.shared:
            finish = any(s.finish_batch_on_rebalance for s in self.subs)
            wait_s = bus.graceful_timeout_s if finish else REBALANCE_WAIT_S
            listener = _Rebalance(self, wait_s)
        self.subscriber = broker.subscriber(
            # created by ensure_topics (compaction where the contract says so), never by FastStream
            *(KafkaTopic(s.topic.name, declare=False) for s in self.subs),
            group_id=bus.group_id(first.group) if self.shared else None,
            batch=True,
            max_records=max(s.max_batch for s in self.subs),
            batch_timeout_ms=BATCH_TIMEOUT_MS,
            heartbeat_interval_ms=min(HEARTBEAT_MS, bus.session_timeout_ms // 3),
            session_timeout_ms=bus.session_timeout_ms,
            auto_offset_reset=bus.offset_reset(first),
            ack_policy=AckPolicy.MANUAL,
            listener=listener,
            parser=_tolerant_parser,
            decoder=_no_body,
            no_reply=True,
            partition_assignment_strategy=CO_PARTITIONED_ASSIGNORS if self.co_partitioned else DEFAULT_ASSIGNORS,
        )
        self.subscriber(self._handler())

    async def call_hooks(self, hook: Literal["on_assign", "on_revoke"], tps: Any) -> None:
        """Each subscription's ``hook`` with its topic's part of ``tps``, keys placed as the producer places
        them (murmur2 over the topic's partitions, as the cluster metadata lists them)."""
        for sub in self.subs:
            call = getattr(sub, hook)
            if call is None:
                continue
            name = sub.topic.name
            consumer = self.subscriber.consumer
            every = sorted(consumer.partitions_for_topic(name) or ())
            mine = [tp for tp in tps if tp.topic == name]
            try:
                offsets = await _offsets(consumer, mine, at_revoke=hook == "on_revoke")
                await call(Assignment(sub.topic, frozenset(tp.partition for tp in mine), _key_placer(every), offsets))
            except Exception:  # aiokafka would only log it too; the group goes on either way
                log.exception("%s: %s(%s) failed", self.name, hook, sorted(tp.partition for tp in mine))

    def _handler(self) -> Any:
        async def handle_batch(message: KafkaMessage) -> None:
            self.idle.clear()
            try:
                await self._handle(message)
            except Exception:  # a fault of ours, not a handler's (those rewind): keep the batch, loudly
                log.exception("%s: a fetched batch could not be handled; it will be redelivered", self.name)
                _rewind(message.consumer, list(_by_topic(_records(message)).values()))
                await asyncio.sleep(1.0)
            finally:
                self.idle.set()

        handle_batch.__name__ = self.name.replace(".", "_").replace("-", "_").replace(":", "__").replace(",", "_")
        return handle_batch

    async def _handle(self, message: Any) -> None:
        """Each topic's part of the batch to its subscription; then commit what was handled. A failure rewinds
        that part and the parts after it (the earlier ones are committed)."""
        parts = _by_topic(_records(message))
        if self.shared:
            self._record_lag(message.consumer, parts)
        for i, sub in enumerate(self.subs):
            part = parts.get(sub.topic.name)
            if not part:
                continue
            try:
                await self.bus._consume(sub, [r for records in part.values() for r in records])
            except Exception as exc:
                if isinstance(exc, TransientError):
                    log.warning("%s: transient failure (%s); the batch will be redelivered", self.name, exc)
                else:  # e.g. the dead letters could not be published: the batch is not done either
                    log.error("%s: batch failed (%r); it will be redelivered", self.name, exc)
                _rewind(message.consumer, [parts.get(s.topic.name, {}) for s in self.subs[i:]])
                await self._commit(message)
                await asyncio.sleep(self.bus.backoff_s * 10)
                return
        if await self._commit(message):
            await self._after_commit(message.consumer)

    async def _commit(self, message: Any) -> bool:
        """Commit the consumer's positions: past every record handled, at the first one rewound. Whether the
        group has them."""
        if not self.shared:
            return False
        try:
            await message.ack()
        except KafkaError as exc:  # the group moved on (rebalance) or the broker is away: redelivered later
            log.info("%s: commit failed (%r); the batch may be redelivered", self.name, exc)
            return False
        return True

    async def _after_commit(self, consumer: Any) -> None:
        """The subscriptions' ``on_committed`` hooks (each once), after a batch handled whole was committed."""
        hooks: list[Any] = []
        for sub in self.subs:
            if sub.on_committed is not None and sub.on_committed not in hooks:  # bound methods compare equal
                hooks.append(sub.on_committed)
        if not hooks:
            return

        async def positions() -> dict[str, dict[int, int]]:
            # positions move only when the next batch is fetched, after the hooks: they are what was committed
            assigned = list(consumer.assignment())
            topics = {tp.topic for tp in assigned}
            return {
                t: await _offsets(consumer, [tp for tp in assigned if tp.topic == t], at_revoke=True) for t in topics
            }

        for hook in hooks:
            try:
                await hook(positions)
            except Exception:  # the batch is done and committed either way
                log.exception("%s: on_committed failed", self.name)

    def _record_lag(self, consumer: Any, parts: _Parts) -> None:
        """Consumer lag per partition at this batch: the partition's end (as last fetched) minus the offset
        after this batch's last record there."""
        for topic, part in parts.items():
            for (_, partition), records in part.items():
                end = consumer.highwater(TopicPartition(topic, partition))
                if end is not None:
                    CONSUMER_LAG.labels(self.group, topic, str(partition)).set(max(0, end - records[-1].offset - 1))

    async def settle(self) -> None:
        """Resolve a groupless subscriber's start positions now, so that a tail receives everything published
        after :meth:`KafkaBus.start` returned (the consumer resolves them lazily, at its first fetch)."""
        consumer = self.subscriber.consumer
        try:
            async with asyncio.timeout(SETTLE_S):
                while not consumer.assignment():  # noqa: ASYNC110 - aiokafka signals an assignment by no event
                    await asyncio.sleep(0.05)
                for tp in consumer.assignment():
                    await consumer.position(tp)
        except TimeoutError:
            log.warning("%s: start positions not resolved in %.0f s; consuming anyway", self.name, SETTLE_S)

    async def stop(self) -> None:
        """Stop fetching, let the batch in hand finish and commit (up to the broker's graceful timeout), leave the
        group."""
        await self.subscriber.stop()


async def _offsets(consumer: Any, tps: list[TopicPartition], *, at_revoke: bool) -> dict[int, int]:
    """At a revoke the consumer's positions (what it handled), at an assign the group's committed offsets. A
    partition without a position yet (assigned a moment before) is left out at a revoke: aiokafka would wait for
    it inside the rebalance, which cannot go on until this callback returns."""

    async def one(tp: TopicPartition) -> int | None:
        with contextlib.suppress(KafkaError, AssertionError):  # no longer assigned: no offset to compare
            offset = await consumer.position(tp) if at_revoke else await consumer.committed(tp)
            return None if offset is None else int(offset)
        return None

    asks = {tp.partition: asyncio.ensure_future(one(tp)) for tp in tps}
    if not asks:
        return {}
    _, late = await asyncio.wait(asks.values(), timeout=REVOKE_POSITION_WAIT_S if at_revoke else None)
    for ask in late:
        ask.cancel()
    return {p: offset for p, ask in asks.items() if ask not in late and (offset := ask.result()) is not None}


def _key_placer(partitions: list[int]) -> Any:
    """key -> partition as :class:`KafkaBus` (aiokafka's ``DefaultPartitioner``) places it on ``partitions``."""
    partitioner = DefaultPartitioner()

    def partition_of(key: str) -> int:
        return int(partitioner(key.encode(), partitions, partitions))

    return partition_of


def _misplaced(record: _Record, key: str, place: RowPlacer) -> bool:
    """The record is not keyed by its event's partition key, or not in that key's partition."""
    return record.key is None or record.key != key.encode() or record.partition != place(key)


def _within_message_size(batch: RowBatch) -> list[bytes]:
    """The batch as encoded messages of at most PRODUCER_BATCH_BYTES each, in row order: a message over the
    broker's message.max.bytes (1 MB) is refused, and 10,000 indicator rows are ~2.5 MB. A large batch is cut
    by the size of its first SIZE_SAMPLE_ROWS rows (rows vary little in length), so each row is encoded once."""
    rows = len(batch)
    if rows > SIZE_SAMPLE_ROWS:
        sample = len(encode_event(_rows_slice(batch, 0, SIZE_SAMPLE_ROWS)))
        parts = -(-sample * rows * 5 // (SIZE_SAMPLE_ROWS * PRODUCER_BATCH_BYTES * 4))  # ceil, a fifth to spare
        if parts > 1:
            step = -(-rows // parts)
            return [body for k in range(0, rows, step) for body in _within_message_size(_rows_slice(batch, k, step))]
    body = encode_event(batch)
    if len(body) <= PRODUCER_BATCH_BYTES or rows == 1:
        return [body]
    half = rows // 2  # longer rows than the sample's: halves until each fits
    return _within_message_size(_rows_slice(batch, 0, half)) + _within_message_size(
        _rows_slice(batch, half, rows - half)
    )


def _rows_slice(batch: RowBatch, start: int, count: int) -> RowBatch:
    """Rows ``start`` to ``start + count`` of the batch."""
    columns = [c[start : start + count] for c in batch.columns()]
    return batch.of_columns(columns, produced_at=batch.produced_at)


def _records(message: Any) -> tuple[_Record, ...]:
    raw = message.raw_message
    return raw if isinstance(raw, tuple) else (raw,)


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


async def _leader_partitions(admin: AIOKafkaAdminClient, name: str) -> list[int]:
    """The partitions of topic ``name``, once each has a leader (a topic created a moment ago takes a moment)."""
    for _ in range(50):
        described = await admin.describe_topics([name])
        parts = [p for d in described if d["topic"] == name for p in d["partitions"]]
        if parts and all(p["leader"] >= 0 for p in parts):
            return sorted(p["partition"] for p in parts)
        await asyncio.sleep(0.2)
    raise TransientError(f"{name} has no partition leaders yet; is the broker healthy?")


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
        session_timeout_s: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.session_timeout_ms = int(session_timeout_s * 1000)
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.group_prefix = group_prefix
        self.from_beginning = from_beginning
        self.replication = replication
        self.graceful_timeout_s = graceful_timeout_s
        self.partitions = partitions
        # stamped on everything this instance publishes, so a TAIL_OTHERS subscription can drop it undecoded
        self.origin = uuid.uuid4().hex.encode()
        self.broker = KafkaBroker(
            bootstrap,
            client_id=client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            # aiokafka's default 16 KB batches hold ~30 events; with idempotence one request is in flight
            # per broker, so a large publish would wait for one acknowledgement per small batch in turn
            max_batch_size=PRODUCER_BATCH_BYTES,
            logger=None,  # ours log what matters (structlog); FastStream's per-message lines cost and repeat them
            # on stop, a subscriber stops fetching and waits this long for the batch its handler is on
            graceful_timeout=graceful_timeout_s,
        )
        self._keys = _KeyPartitions(DefaultPartitioner())
        self._partition_lists: dict[str, tuple[float, list[int]]] = {}
        self._admin: AIOKafkaAdminClient | None = None
        self._subscribers: list[_Subscriber] = []
        self._started = False

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
        subscribers = [_Subscriber(self, subs) for subs in self._consumers()]
        for subscriber in subscribers:
            if subscriber.co_partitioned:
                await self._check_co_partitioned(subscriber)
        self._subscribers = subscribers
        for subscriber in self._subscribers:
            subscriber.register(self.broker)
        await self.broker.start()  # the producer, then every subscriber
        self._started = True
        await asyncio.gather(*(s.settle() for s in self._subscribers if not s.shared))

    async def stop_consuming(self) -> None:
        """Graceful shutdown, step 1: stop fetching, let the handlers finish the batches they are on (up to
        ``graceful_timeout_s``), commit their offsets and leave the consumer groups. Publishing still works."""
        running, self._subscribers = self._subscribers, []
        await asyncio.gather(*(s.stop() for s in running))

    async def _check_co_partitioned(self, subscriber: _Subscriber) -> None:
        """A co-partitioned group's topics must have as many partitions each: a token's partition number is
        its symbol's hash modulo the count, the same member owning one number in every topic."""
        counts = {s.topic.name: len(await self._partitions(s.topic.name)) for s in subscriber.subs}
        if len(set(counts.values())) > 1:
            raise RuntimeError(
                f"{subscriber.name}: the topics of a co-partitioned group need equal partition counts, got {counts}"
                " (a v1 topic and its v2 are created together; add partitions to both)"
            )

    async def stop(self) -> None:
        await self.stop_consuming()  # consumers first: a handler still running may publish
        await self.flush_rows()
        if self._started:
            await self.broker.stop()  # flushes what the producer holds
            self._started = False
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    async def ready(self) -> bool:
        if not self._started:
            return False
        try:
            return bool(await self.broker.ping(timeout=2.0))
        except Exception:
            return False

    async def _partitions(self, name: str) -> list[int]:
        if self._admin is not None:
            return await _leader_partitions(self._admin, name)
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="tokenpulse-admin")
        await admin.start()
        try:
            return await _leader_partitions(admin, name)
        finally:
            await admin.close()

    async def _partition_list(self, name: str) -> list[int]:
        """``name``'s partitions for placing keys, read again every PARTITIONS_TTL_S (partitions can be added)."""
        now = time.monotonic()
        cached = self._partition_lists.get(name)
        if cached is None or now - cached[0] > PARTITIONS_TTL_S:
            cached = self._partition_lists[name] = (now, await self._partitions(name))
        return cached[1]

    async def committed_offsets(self, group: str, topic: Topic) -> dict[int, int]:
        return await self._committed(group, topic)

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

    async def read_log_chunks(
        self, topic: Topic, want: LogRange, rejected: list[Rejected] | None = None
    ) -> AsyncIterator[list[Event]]:
        await ensure_topics(self.bootstrap, [topic], replication=self.replication, partitions=self.partitions)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="tokenpulse-log",
        )
        await consumer.start()
        unread: dict[Any, Rejected] = {}
        try:
            every = await self._partitions(topic.name)
            wanted = every if want.partitions is None else [p for p in every if p in want.partitions]
            if want.keys is not None:
                place = self._keys.of(topic.name, every)
                held = {place(key.encode()) for key in want.keys}
                wanted = [p for p in wanted if p in held]
            if not wanted:
                return
            tps = [TopicPartition(topic.name, p) for p in wanted]
            consumer.assign(tps)
            end = await consumer.end_offsets(tps)
            if want.until_group is not None:  # what the group has processed, nothing on a partition it never committed
                committed = await self._committed(want.until_group, topic)
                end = {tp: min(end[tp], committed.get(tp.partition, 0)) for tp in tps}
            # explicit offsets (not seek_to_beginning, whose lazy reset can race with the assignment)
            start = await consumer.beginning_offsets(tps)
            if want.since_ms is not None:
                found = await consumer.offsets_for_times(dict.fromkeys(tps, want.since_ms))
                start = {tp: (hit.offset if (hit := found.get(tp)) is not None else end[tp]) for tp in tps}
            for tp in tps:
                if want.from_offsets is not None and tp.partition in want.from_offsets:
                    start[tp] = want.from_offsets[tp.partition]
                consumer.seek(tp, start[tp])
            remaining = {tp for tp in tps if start[tp] < end[tp]}
            # a batch topic's message holds up to 10,000 rows: fewer messages per fetch keep a chunk small
            per_fetch = LOG_FETCH_BATCHES if topic.batched else LOG_FETCH_EVENTS
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=per_fetch)
                in_range = [r for tp, records in batch.items() for r in records if r.offset < end[tp]]
                # validation off the event loop: a long read must not starve heartbeats of the running consumers
                decoded, bad = await asyncio.to_thread(_decode_all, topic, [r for r in in_range if r.value is not None])
                if rejected is not None:
                    _note_rejects(in_range, bad, unread)
                for tp in list(remaining):
                    if await consumer.position(tp) >= end[tp]:
                        remaining.discard(tp)
                if decoded:
                    yield decoded
        finally:
            await consumer.stop()
        if rejected is not None:
            rejected.extend(unread.values())

    async def _consume(self, sub: Subscription, records: list[_Record]) -> None:
        """One topic's part of a fetched batch: decoded (invalid ones dead-lettered), then handed to ``sub``'s
        handler under one CONSUMER span, in chunks of its ``max_batch``."""
        events: list[Event] = []
        dead: list[DeadLetterEvent] = []
        kept: list[_Record] = []
        misplaced: list[Event] = []
        own = (ORIGIN, self.origin)
        place = await self._row_placer(sub.topic) if sub.on_misplaced is not None else None
        skip_copies = self.reads_rows_instead(sub.group, sub.topic)
        for record in records:
            if record.value is None:  # tombstone on a compacted topic: the deletion event came first
                continue
            if sub.delivery is Delivery.TAIL_OTHERS and own in (record.headers or ()):
                continue
            if skip_copies and (COPY, b"v2") in (record.headers or ()):
                continue
            kept.append(record)
            try:
                event = decode_message(sub.topic, RawMessage(value=record.value))
            except ValueError as exc:
                dead.append(dead_letter_for(sub.topic, sub.group, str(exc), raw=_raw(record)))
                continue
            if place is not None and _misplaced(record, event.partition_key(), place):
                misplaced.append(event)
            else:
                events.append(event)
        if not kept:
            return
        if misplaced and sub.on_misplaced is not None:  # before the handler: the rows join their partition
            await sub.on_misplaced(misplaced)
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

    async def _send(self, topic: Topic, messages: list[_Outgoing], partitions: list[int] | None = None) -> None:
        """Publish (value, key, headers) messages under one PRODUCER span, one run of FastStream batches per
        partition (in publishing order within it); returns once the broker has them all."""
        if not messages:
            return
        if not self._started:
            raise RuntimeError("the Kafka bus is not started")
        with publish_span(self.tracer, "kafka", topic, len(messages)):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            partition_of = self._keys.of(topic.name, await self._partition_list(topic.name))
            stamped: dict[int, dict[str, str]] = {}
            # per partition, runs of messages with the same headers (FastStream's batch carries one set)
            runs: dict[int, list[tuple[dict[str, str], list[tuple[bytes | None, bytes | None]]]]] = {}
            for i, (value, key, headers) in enumerate(messages):
                hdrs = stamped.get(id(headers))
                if hdrs is None:
                    hdrs = stamped[id(headers)] = {**headers, **carrier, ORIGIN: self.origin.decode()}
                partition_runs = runs.setdefault(partition_of(key) if partitions is None else partitions[i], [])
                if not partition_runs or partition_runs[-1][0] is not hdrs:
                    partition_runs.append((hdrs, []))
                partition_runs[-1][1].append((value, key))
            futures = []
            for partition, partition_runs in runs.items():
                for hdrs, records in partition_runs:
                    futures += await self._publish_run(topic.name, partition, hdrs, records)
            await asyncio.gather(*futures)
        EVENTS_PUBLISHED.labels(topic.name).inc(len(messages))

    async def _publish_run(
        self, topic: str, partition: int, headers: dict[str, str], records: list[tuple[bytes | None, bytes | None]]
    ) -> list[Any]:
        """Queue one partition's messages sharing ``headers`` as FastStream batches within the producer's batch
        size; the futures of the broker's acknowledgements. A tombstone (no value) goes on its own: in a batch
        FastStream would send it as an empty value."""
        futures: list[Any] = []
        per_record = sum(len(k) + len(v) for k, v in headers.items()) + 64 + RECORD_OVERHEAD_BYTES  # + its id
        batch: list[KafkaPublishMessage | bytes] = []
        size = 0
        for value, key in records:
            n = len(value or b"") + len(key or b"") + per_record
            if batch and (value is None or size + n > PRODUCER_BATCH_BYTES):
                futures += await self._publish_batch(topic, partition, headers, batch)
                batch, size = [], 0
            if value is None:
                futures.append(
                    await self.broker.publish(
                        None, topic, key=key, partition=partition, headers=headers, no_confirm=True
                    )
                )
                continue
            # FastStream unwraps its message objects only in a batch where one has a key: a keyless one is the body
            batch.append(KafkaPublishMessage(value, key=key) if key is not None else value)
            size += n
        if batch:
            futures += await self._publish_batch(topic, partition, headers, batch)
        return futures

    async def _publish_batch(
        self, topic: str, partition: int, headers: dict[str, str], batch: list[KafkaPublishMessage | bytes]
    ) -> list[Any]:
        futures = []
        while batch:
            try:
                futures.append(
                    await self.broker.publish_batch(
                        *batch, topic=topic, partition=partition, headers=headers, no_confirm=True
                    )
                )
                break
            except BatchBufferOverflowException as exc:  # the size estimate fell short: what fitted, then the rest
                cut = max(1, exc.message_position)
                futures += await self._publish_batch(topic, partition, headers, batch[:cut])
                batch = batch[cut:]
        return futures

    async def _row_placer(self, topic: Topic) -> RowPlacer:
        by_key = self._keys.of(topic.name, await self._partition_list(topic.name))
        by_symbol: dict[str, int] = {}

        def place(symbol: str) -> int:
            p = by_symbol.get(symbol)
            if p is None:
                p = by_symbol[symbol] = by_key(symbol.encode())
            return p

        return place

    async def _send_batches(self, topic: Topic, batches: Sequence[tuple[int, RowBatch]]) -> None:
        sized = [(p, body) for p, b in batches for body in _within_message_size(b)]
        await self._send(topic, [(body, None, JSON_HEADERS) for _, body in sized], partitions=[p for p, _ in sized])

    async def publish(self, topic: Topic, events: Sequence[Event]) -> None:
        if topic.batched:  # each batch's rows, placed by their tokens
            for batch in events:
                await self.publish_rows(topic, batch, linger=False)  # type: ignore[arg-type]
            return
        for event in events:
            if not isinstance(event, topic.model):
                raise TypeError(f"{topic.name} carries {topic.model.__name__}, not {type(event).__name__}")
        await self._send(topic, [(encode_event(e), e.partition_key().encode(), JSON_HEADERS) for e in events])

    async def publish_v1_copy(self, topic: Topic, events: Sequence[Event]) -> None:
        await self._send(topic, [(encode_event(e), e.partition_key().encode(), COPY_HEADERS) for e in events])

    async def publish_raw(self, topic: Topic, messages: Sequence[RawMessage]) -> None:
        await self._send(topic, [(m.value or b"", m.key.encode() if m.key else None, m.headers) for m in messages])

    async def publish_tombstone(self, topic: Topic, key: str) -> None:
        await self._send(topic, [(None, key.encode(), {})])
