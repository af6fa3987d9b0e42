"""Bus port and the delivery logic both adapters share (validation, retries, dead letters)."""

from __future__ import annotations

import abc
import asyncio
import enum
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import TracerProvider
from pydantic import ValidationError

from tokenpulse_shared.batches import MAX_BATCH_ROWS, RowBatch
from tokenpulse_shared.events import DeadLetterEvent, Event, utcnow
from tokenpulse_shared.telemetry import BATCH_SECONDS, DEAD_LETTERS, EVENT_AGE_SECONDS, EVENTS_CONSUMED
from tokenpulse_shared.topics import BY_NAME, DEAD_LETTER, V2_OF, Topic

log = logging.getLogger(__name__)

Handler = Callable[[list[Any]], Awaitable[None]]
RowPlacer = Callable[[str], int]  # a token symbol -> its partition

ROW_LINGER_S = 0.005  # how long rows wait for others of their topic before they are sent (replaces linger_ms)
ROW_LINGER_ROWS = 1000  # rows that make a topic's buffer go out at once


def rows_as_events(handler: Handler) -> Handler:
    """A handler of per-event (v1) events as a handler of a batch topic: each batch's rows become the events
    of its v1 topic at the edge, so a consumer reads both forms with the same code."""

    async def handle(batches: list[Any]) -> None:
        await handler([event for batch in batches for event in batch.to_events()])

    handle.__name__ = getattr(handler, "__name__", "handle") + "_rows"
    return handle


def publish_span(tracer: trace.Tracer, system: str, topic: Topic, count: int) -> AbstractContextManager[trace.Span]:
    """The producer span of one publish, with OpenTelemetry's messaging attributes."""
    return tracer.start_as_current_span(
        f"{topic.name} publish",
        kind=trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": system,
            "messaging.destination.name": topic.name,
            "messaging.batch.message_count": count,
        },
    )


@dataclass(frozen=True)
class Assignment:
    """Partitions of one topic that a :attr:`Delivery.SHARED` subscription gains or loses at a rebalance.

    ``partition_of`` maps a message key to its partition as this bus places keys, so a handler that keeps
    state per key (ingest: per symbol) knows which of it a partition holds. ``offsets`` (Kafka): at a
    revoke, this instance's position per partition lost (after the batch in hand was committed); at an
    assign, the group's committed offset per partition gained: a partition revoked and assigned back at the
    same offset was handled by no one in between, so state built from it is still whole."""

    topic: Topic
    partitions: frozenset[int]
    partition_of: Callable[[str], int]
    offsets: Mapping[int, int] = field(default_factory=dict)

    def holds(self, key: str) -> bool:
        return self.partition_of(key) in self.partitions


PartitionHook = Callable[[Assignment], Awaitable[None]]
# the consumer's positions per topic and partition, right after a commit saved them (asked only when needed)
Positions = Callable[[], Awaitable[dict[str, dict[int, int]]]]
CommitHook = Callable[[Positions], Awaitable[None]]


class TransientError(Exception):
    """A dependency is unavailable: the batch is redelivered later, never dead-lettered."""


@dataclass(frozen=True)
class RawMessage:
    """A message as it travels on the wire: bytes plus headers and key."""

    value: bytes | None
    key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Rejected:
    """A message :meth:`Bus.read_log` could not read: the message as it is, and why."""

    message: RawMessage
    reason: str


class Delivery(enum.Enum):
    """Which messages of a topic each running instance of a service receives, and from where it starts.

    One of these per subscription, instead of a set of flags: each is a combination the adapters
    implement and the contract tests (``tests/contract/``) check on both.
    """

    SHARED = "shared"
    """The instances of a consumer group split the topic's partitions (each key goes to one instance) and
    commit what they handled: a restart continues where the group stopped. The default."""
    BROADCAST = "broadcast"
    """Every instance receives every message, the whole topic from its beginning at every start, nothing
    committed: how a compacted topic is held as a table in memory. The in-process bus keeps no history,
    so there it is every message published while the instance runs."""
    TAIL = "tail"
    """Every instance receives every message published from its start on (no history, nothing
    committed): how a busy stream is followed live in every replica; read the past with
    :meth:`Bus.read_log` where needed."""
    TAIL_OTHERS = "tail-others"
    """:attr:`TAIL` minus what this bus instance published itself (dropped before it is decoded): how a
    replica follows what the *other* replicas of its service publish."""


@dataclass(frozen=True)
class Subscription:
    topic: Topic
    group: str
    handler: Handler
    delivery: Delivery = Delivery.SHARED
    max_batch: int = 5000
    finish_batch_on_rebalance: bool = False
    on_assign: PartitionHook | None = None
    on_revoke: PartitionHook | None = None
    co_partitioned: bool = False
    on_misplaced: Handler | None = None
    on_committed: CommitHook | None = None


@dataclass
class _RowBuffer:
    """Rows of one topic waiting to be sent, and the publishers waiting for them."""

    batches: list[RowBatch] = field(default_factory=list)
    rows: int = 0
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


def decode_message(topic: Topic, raw: RawMessage) -> Event:
    """Parse and validate one wire message into its topic's model; raise ValueError with the reason.

    One pass of pydantic-core over the bytes, for every topic (a msgspec decoder in front of the busiest v1
    topics was removed: with pydantic 2.14 it cost more than pydantic alone, docs/design/0001)."""
    if raw.value is None:
        raise ValueError("empty message (tombstone)")
    try:
        return topic.model.model_validate_json(raw.value)
    except RecursionError as exc:  # the models bound their nesting; this is the belt to those braces
        raise ValueError("nested too deeply") from exc
    except ValidationError as exc:
        errors = exc.errors()
        first: dict[str, Any] = dict(errors[0]) if errors else {}
        if first.get("type") == "json_invalid":
            raise ValueError(f"not JSON: {first.get('msg')}") from exc
        if first.get("type") == "model_type" and not first.get("loc"):
            raise ValueError("not a JSON object") from exc
        detail = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in errors[:5])
        raise ValueError(f"schema validation failed for {topic.model.__name__}: {detail}") from exc


def encode_event(event: Event) -> bytes:
    return event.__pydantic_serializer__.to_json(event)  # = model_dump_json().encode(), without the copies


def dead_letter_for(
    topic: Topic, consumer: str, reason: str, raw: RawMessage | None = None, event: Event | None = None
) -> DeadLetterEvent:
    if raw is not None:
        payload = (raw.value or b"").decode("utf-8", errors="replace")
        headers = raw.headers
        key = raw.key
    else:
        assert event is not None
        payload = event.model_dump_json()
        headers = {}
        key = event.partition_key()
    return DeadLetterEvent(
        topic=topic.name,
        consumer=consumer,
        reason=reason[:2000],
        payload=payload[:1_000_000],
        headers={k: v for k, v in headers.items() if k.lower() != "content-type"},
        key=key,
    )


@dataclass(frozen=True)
class LogRange:
    """Which part of a topic's log :meth:`Bus.read_log` reads (its arguments of the same names)."""

    since_ms: int | None = None
    until_group: str | None = None
    partitions: Collection[int] | None = None
    keys: Collection[str] | None = None
    from_offsets: Mapping[int, int] | None = None  # per partition: read from this offset, not from since_ms


class Bus(abc.ABC):
    """Publish typed events; subscribe batch handlers per consumer group."""

    tracer_name = "tokenpulse.bus"

    def __init__(
        self,
        *,
        retries: int = 3,
        backoff_s: float = 0.2,
        max_batch: int = 5000,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(self.tracer_name)
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_batch = max_batch
        self.subscriptions: list[Subscription] = []
        self.dead_letters = 0
        self._row_buffers: dict[str, _RowBuffer] = {}
        self._row_sends: set[asyncio.Task[None]] = set()

    def subscribe(
        self,
        topic: Topic,
        group: str,
        handler: Handler,
        *,
        delivery: Delivery = Delivery.SHARED,
        max_batch: int | None = None,
        finish_batch_on_rebalance: bool = False,
        on_assign: PartitionHook | None = None,
        on_revoke: PartitionHook | None = None,
        co_partitioned: bool = False,
        on_misplaced: Handler | None = None,
        on_committed: CommitHook | None = None,
    ) -> None:
        """Register ``handler`` for ``topic`` in consumer group ``group`` (before :meth:`start`).

        ``delivery`` says which messages each instance receives (:class:`Delivery`). ``max_batch`` caps the
        events per handler call (default: the bus's).

        ``finish_batch_on_rebalance=True`` (:attr:`Delivery.SHARED` only): when a rebalance takes this
        consumer's partitions, the batch in hand is finished and committed first, the group waiting up to the
        bus's graceful timeout (otherwise ~2 s, after which the batch is redelivered to the partitions' new
        owner). For handlers whose redelivery costs more than a delayed rebalance: the store writer, whose
        batch fetched again with other boundaries would be inserted again. It is a parameter of its own, not
        a :class:`Delivery`, because it does not change which messages an instance receives, only how a
        rebalance treats the one batch in hand.

        ``on_revoke`` / ``on_assign`` (:attr:`Delivery.SHARED` only; state owned per partition): a rebalance
        first awaits ``on_revoke`` with the partitions this instance loses — after the batch in hand finished
        and was committed — then ``on_assign`` with those it holds from then on; on Kafka every rebalance
        calls both (the group's eager protocol takes every partition back first, so ``on_revoke`` may come
        with none). Batches of an assigned partition may already be fetched while ``on_assign`` runs: a
        handler whose state ``on_assign`` builds waits for it. The in-process bus calls ``on_assign`` once,
        with every partition, before it delivers anything.

        ``on_committed`` (Kafka, :attr:`Delivery.SHARED` only): awaited after a batch was handled whole and its
        commit succeeded, before the next batch, with a coroutine function giving the consumer's positions
        (topic -> partition -> next offset) of every assigned partition that has one: what the group has now
        committed, and exactly what the handlers have handled (ingest's checkpoints). Once per consumer, even
        when several of its subscriptions name it. The in-process bus commits nothing and never calls it.
        """
        if (finish_batch_on_rebalance or on_assign or on_revoke or on_committed) and delivery is not Delivery.SHARED:
            raise ValueError(
                "finish_batch_on_rebalance, on_assign and on_revoke apply to Delivery.SHARED only "
                "(the others never rebalance)"
            )
        self.subscriptions.append(
            Subscription(
                topic,
                group,
                handler,
                delivery=delivery,
                max_batch=max_batch or self.max_batch,
                finish_batch_on_rebalance=finish_batch_on_rebalance,
                on_assign=on_assign,
                on_revoke=on_revoke,
                co_partitioned=co_partitioned or on_misplaced is not None,
                on_misplaced=on_misplaced,
                on_committed=on_committed,
            )
        )

    @abc.abstractmethod
    async def publish(self, topic: Topic, events: Sequence[Event]) -> None:
        """Publish events (keyed by their partition key); returns once the bus has them."""

    @abc.abstractmethod
    async def publish_raw(self, topic: Topic, messages: Sequence[RawMessage]) -> None:
        """Publish wire messages as they are (bridges, tests of bad input)."""

    async def publish_v1_copy(self, topic: Topic, events: Sequence[Event]) -> None:
        """Publish events of a v1 topic that are also published as rows of its v2 topic, for outside readers
        of v1 (``TOKENPULSE_PUBLISH_V1``): a consumer group of ours that reads both topics never receives
        these copies (it has the rows)."""
        await self.publish(topic, events)

    def reads_rows_instead(self, group: str, topic: Topic) -> bool:
        """``group`` of this bus also reads ``topic``'s v2 topic, so it skips the v1 copies."""
        v2 = V2_OF.get(topic.name)
        return v2 is not None and any(s.group == group and s.topic is v2 for s in self.subscriptions)

    async def publish_rows(self, topic: Topic, batch: RowBatch, *, linger: bool = True) -> None:
        """Publish the rows of ``batch`` (of any tokens) on a batch topic; returns once the bus has them.

        The rows wait up to :data:`ROW_LINGER_S` for other rows of the topic (until :data:`ROW_LINGER_ROWS`
        are buffered), then go out split by partition, one message per partition sent there without a key, a
        row placed where a message keyed by its symbol goes. ``linger=False`` sends them at once: rows made
        together (the candles and prices of one handled batch) are already one message per partition."""
        if not topic.batched or not isinstance(batch, topic.model):
            raise TypeError(f"{topic.name} carries {topic.model.__name__}, not {type(batch).__name__}")
        if not len(batch):
            return
        if not linger:
            await self._send_rows(topic, [batch])
            return
        buffer = self._row_buffers.setdefault(topic.name, _RowBuffer())
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        buffer.batches.append(batch)
        buffer.rows += len(batch)
        buffer.waiters.append(done)
        if buffer.rows >= ROW_LINGER_ROWS:
            self._flush_rows(topic)
        elif buffer.timer is None:
            buffer.timer = asyncio.get_running_loop().call_later(ROW_LINGER_S, self._flush_rows, topic)
        await done

    def _flush_rows(self, topic: Topic) -> None:
        """Send what ``topic``'s buffer holds, in a task of its own (a timer calls this), and answer its waiters."""
        buffer = self._row_buffers.pop(topic.name, None)
        if buffer is None:
            return
        if buffer.timer is not None:
            buffer.timer.cancel()

        async def send() -> None:
            try:
                await self._send_rows(topic, buffer.batches)
            except Exception as exc:
                for waiter in buffer.waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
                return
            for waiter in buffer.waiters:
                if not waiter.done():
                    waiter.set_result(None)

        task = asyncio.create_task(send(), name=f"rows:{topic.name}")
        self._row_sends.add(task)
        task.add_done_callback(self._row_sends.discard)

    async def flush_rows(self) -> None:
        """Send every buffered row now and wait for the sends in flight (before the bus stops)."""
        for name in list(self._row_buffers):
            self._flush_rows(BY_NAME[name])
        while self._row_sends:
            await asyncio.gather(*self._row_sends, return_exceptions=True)

    async def _send_rows(self, topic: Topic, batches: Sequence[RowBatch]) -> None:
        """The rows of ``batches`` as one message per partition (more past MAX_BATCH_ROWS), sent there."""
        model: type[RowBatch] = topic.model  # type: ignore[assignment]
        columns = batches[0].columns() if len(batches) == 1 else model.concat(batches)
        place = await self._row_placer(topic)
        by_partition: dict[int, list[int]] = {}
        for i, symbol in enumerate(columns[model.COLUMNS.index("symbol")]):
            by_partition.setdefault(place(symbol), []).append(i)
        produced_at = utcnow()
        out: list[tuple[int, RowBatch]] = []
        for partition, rows in by_partition.items():
            for k in range(0, len(rows), MAX_BATCH_ROWS):
                chunk = rows[k : k + MAX_BATCH_ROWS]
                part = [[column[i] for i in chunk] for column in columns]
                out.append((partition, model.of_columns(part, produced_at=produced_at)))
        await self._send_batches(topic, out)

    async def _row_placer(self, topic: Topic) -> RowPlacer:
        """symbol -> partition of ``topic``, as a message keyed by the symbol is placed."""
        raise NotImplementedError(f"{type(self).__name__} does not carry batch topics")

    async def _send_batches(self, topic: Topic, batches: Sequence[tuple[int, RowBatch]]) -> None:
        """Send each batch to its partition, without a key; returns once the bus has them all."""
        raise NotImplementedError(f"{type(self).__name__} does not carry batch topics")

    async def publish_tombstone(self, topic: Topic, key: str) -> None:
        """Mark ``key`` deleted on a compacted topic (no-op where there is no compaction)."""

    def group_id(self, group: str) -> str:
        """The consumer group's name on the broker (Kafka: with the deployment's prefix)."""
        return group

    async def committed_offsets(self, group: str, topic: Topic) -> dict[int, int]:
        """The offsets consumer group ``group`` (of this bus) has committed on ``topic``, by partition (none
        committed: left out). The in-process bus commits nothing."""
        return {}

    async def read_log(
        self,
        topic: Topic,
        since_ms: int | None = None,
        until_group: str | None = None,
        rejected: list[Rejected] | None = None,
        partitions: Collection[int] | None = None,
        keys: Collection[str] | None = None,
    ) -> list[Event]:
        """Read ``topic`` from its beginning (or from ``since_ms``) up to its current end: how a service
        rebuilds state that Kafka holds (rules, its own firing log) before it processes new events.
        ``until_group``: only up to what that consumer group (of this bus) has committed — the events
        a service had fully processed, so that what it then consumes continues exactly from there.
        ``partitions``: only these partitions of the topic (state owned per partition; default all); ``keys``:
        only the partitions these keys are placed on (their events, and the others those partitions hold).
        Invalid messages and tombstones are skipped; ``rejected``, when given, receives the invalid ones
        that no later tombstone of their key deleted (what a service quarantines). The in-process bus
        keeps no log: embedded mode rebuilds such state from the store instead."""
        events: list[Event] = []
        async for chunk in self.read_log_chunks(topic, LogRange(since_ms, until_group, partitions, keys), rejected):
            events += chunk
        return events

    async def read_log_chunks(
        self, topic: Topic, want: LogRange, rejected: list[Rejected] | None = None
    ) -> AsyncIterator[list[Event]]:
        """:meth:`read_log` (the part ``want`` says) a fetch at a time, each partition's events in log order:
        for a log too long to hold whole (a day of ticks). ``rejected`` is filled once the read is done."""
        return
        yield

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    async def stop_consuming(self) -> None:
        """Graceful shutdown, step 1: stop taking new batches and finish the ones in hand (their offsets
        committed), while publishing still works. :meth:`stop` then flushes and closes the rest."""

    async def ready(self) -> bool:
        return True

    async def deliver(self, sub: Subscription, events: list[Event], dead: list[DeadLetterEvent]) -> None:
        """Run ``sub.handler`` on a batch with the shared retry / dead-letter policy.

        Raises :class:`TransientError` when the batch must be redelivered.
        """
        consumer = sub.group
        started = time.perf_counter()
        if events:
            try:
                await self._call_with_retries(sub, events)
            except TransientError:
                raise
            except Exception as exc:  # the batch failed: find the culprit events one by one
                log.warning("handler %s failed on a batch of %d: %r; isolating", consumer, len(events), exc)
                for event in events:
                    try:
                        await self._call_with_retries(sub, [event])
                    except TransientError:
                        raise
                    except Exception as single_exc:
                        dead.append(dead_letter_for(sub.topic, consumer, f"handler error: {single_exc!r}", event=event))
        if dead:
            self.dead_letters += len(dead)
            for d in dead:
                log.warning("dead letter from %s on %s: %s", consumer, sub.topic.name, d.reason)
            if sub.topic is not DEAD_LETTER:
                await self.publish(DEAD_LETTER, dead)
            DEAD_LETTERS.labels(consumer, sub.topic.name).inc(len(dead))
        if events:
            EVENTS_CONSUMED.labels(consumer, sub.topic.name).inc(len(events))
            BATCH_SECONDS.labels(consumer, sub.topic.name).observe(time.perf_counter() - started)
            oldest = min(e.produced_at for e in events)
            EVENT_AGE_SECONDS.labels(consumer, sub.topic.name).observe(max(0.0, time.time() - oldest.timestamp()))

    async def _call_with_retries(self, sub: Subscription, events: list[Event]) -> None:
        attempt = 0
        while True:
            try:
                await sub.handler(events)
                return
            except TransientError:
                raise
            except Exception:
                attempt += 1
                if attempt > self.retries:
                    raise
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
