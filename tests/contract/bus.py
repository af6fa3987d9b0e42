"""The Bus port's contract: behaviours every adapter shows, written once and run per adapter.

In the manner of FastStream's own broker tests (``tests/brokers/base/``: one base test case, a
subclass per broker): :class:`BusContract` holds the tests; ``test_bus_memory.py`` and
``test_bus_kafka.py`` subclass it with a ``make_bus`` fixture that makes instances on one transport
(peers of an in-process bus; buses of one group prefix on the real broker), as the replicas of a
service share a broker. What one adapter cannot do by design is a capability flag
(:attr:`BusContract.keeps_history`), and those tests are skipped for it, as FastStream does.

Kafka's topics are shared by every test on the broker: each test uses symbols and rule ids of its
own and looks only at those.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tokenpulse_shared.batches import TickBatch
from tokenpulse_shared.bus import Assignment, Bus, Delivery, RawMessage, TransientError
from tokenpulse_shared.bus.base import ROW_LINGER_ROWS
from tokenpulse_shared.events import (
    AlertCondition,
    AlertRuleEvent,
    DeadLetterEvent,
    Event,
    PriceEvent,
    TickEvent,
)
from tokenpulse_shared.topics import ALERT_RULES, DEAD_LETTER, PRICES, TICKS, TICKS_V2

T0 = datetime(2024, 1, 1, tzinfo=UTC)
MakeBus = Callable[..., Bus]


def symbol(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:8].upper()


def price(sym: str, i: int) -> PriceEvent:
    return PriceEvent(symbol=sym, ts=T0.replace(minute=i % 60, hour=i // 60 % 24), price=float(i + 1))


def rule(rule_id: str | None = None) -> AlertRuleEvent:
    return AlertRuleEvent(
        rule_id=rule_id or f"r-{uuid.uuid4().hex[:12]}",
        owner="o",
        symbol="BTC",
        condition=AlertCondition(kind="price_above", value=1.0),
    )


async def wait_for(cond: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def prices_of(sym: str, into: list[PriceEvent]) -> Callable[[list[Any]], Any]:
    async def handler(events: list[Event]) -> None:
        into.extend(e for e in events if isinstance(e, PriceEvent) and e.symbol == sym)

    return handler


def prices_of_prefix(prefix: str, into: list[PriceEvent]) -> Callable[[list[Any]], Any]:
    async def handler(events: list[Event]) -> None:
        into.extend(e for e in events if isinstance(e, PriceEvent) and e.symbol.startswith(prefix))

    return handler


def tick(sym: str, i: int) -> TickEvent:
    return TickEvent(symbol=sym, source="contract", ts=T0.replace(second=i % 60), price=float(i + 1), trade_id=str(i))


def rows_of(prefix: str, into: list[tuple[str, str]], batches: list[int] | None = None) -> Callable[[list[Any]], Any]:
    """Collects (symbol, trade id) of every row of ``prefix``'s tokens, v1 events and v2 batches alike."""

    async def handler(events: list[Event]) -> None:
        for e in events:
            if isinstance(e, TickBatch):
                mine = [(s, t or "") for s, t in zip(e.symbol, e.trade_id, strict=True) if s.startswith(prefix)]
                into.extend(mine)
                if batches is not None and mine:
                    batches.append(len(e))
            elif isinstance(e, TickEvent) and e.symbol.startswith(prefix):
                into.append((e.symbol, e.trade_id or ""))

    return handler


def dead_letters_of(marker: str, into: list[DeadLetterEvent]) -> Callable[[list[Any]], Any]:
    async def handler(events: list[Event]) -> None:
        into.extend(e for e in events if isinstance(e, DeadLetterEvent) and (marker in e.payload or e.key == marker))

    return handler


class FailsFirst:
    """A handler of ``sym``'s prices that raises ``error`` on its first ``times`` calls holding any, then records
    their ids in ``handled``; ``calls`` counts the calls holding any, ``failures`` the ones it failed."""

    def __init__(self, sym: str, times: int, error: Exception) -> None:
        self.sym, self.times, self.error = sym, times, error
        self.calls = self.failures = 0
        self.handled: list[str] = []

    async def __call__(self, events: list[Event]) -> None:
        mine = [e for e in events if isinstance(e, PriceEvent) and e.symbol == self.sym]
        if mine:
            self.calls += 1
            if self.failures < self.times:
                self.failures += 1
                raise self.error
        self.handled.extend(e.event_id for e in mine)


class BusContract:
    """The behaviours; a subclass provides ``make_bus`` (a fixture) and :meth:`quiet`."""

    keeps_history: ClassVar[bool]
    rebalances: ClassVar[bool] = False
    """The adapter moves partitions between the instances of a group as they come and go."""
    """The adapter keeps a log: a broadcast re-reads it at every start and :meth:`Bus.read_log` returns it."""

    async def quiet(self, bus: Bus) -> None:
        """Wait until anything still on its way to a handler has arrived (to assert that nothing more does)."""
        raise NotImplementedError

    def needs_history(self) -> None:
        if not self.keeps_history:
            pytest.skip("this adapter keeps no history by design (embedded mode rebuilds state from the store)")

    # --- delivery guarantees ------------------------------------------------------------------------

    async def test_per_key_order_and_no_loss(self, make_bus: MakeBus) -> None:
        bus = make_bus()
        syms = [symbol("A"), symbol("B"), symbol("C")]
        seen: dict[str, list[float]] = {s: [] for s in syms}

        async def handler(events: list[Event]) -> None:
            for e in events:
                if isinstance(e, PriceEvent) and e.symbol in seen:
                    seen[e.symbol].append(e.price)

        bus.subscribe(PRICES, "order", handler, max_batch=7)
        await bus.start()
        for i in range(0, 300, 50):
            await bus.publish(PRICES, [price(s, j) for j in range(i, i + 50) for s in syms])
        await wait_for(lambda: all(len(v) >= 300 for v in seen.values()))
        for s in syms:
            assert seen[s] == [float(i + 1) for i in range(300)]

    async def test_each_group_gets_every_event(self, make_bus: MakeBus) -> None:
        bus = make_bus()
        sym = symbol("G")
        got: dict[str, list[PriceEvent]] = {"a": [], "b": []}
        for group, into in got.items():
            bus.subscribe(PRICES, group, prices_of(sym, into))
        await bus.start()
        await bus.publish(PRICES, [price(sym, i) for i in range(50)])
        await wait_for(lambda: all(len(v) >= 50 for v in got.values()))
        await self.quiet(bus)
        assert [len(v) for v in got.values()] == [50, 50]

    async def ten_prices_handled(self, bus: Bus, sym: str, handled: list[str]) -> list[PriceEvent]:
        """Start ``bus``, publish ten prices of ``sym``, wait until the handler recorded every one, then quiet."""
        await bus.start()
        events = [price(sym, i) for i in range(10)]
        await bus.publish(PRICES, events)
        await wait_for(lambda: set(handled) >= {e.event_id for e in events})
        await self.quiet(bus)
        return events

    async def each_handled_once_none_dead(self, bus: Bus, group: str, handler: FailsFirst) -> None:
        """``handler`` subscribed as ``group``: ten prices of its token, each recorded once, none dead-lettered."""
        dead: list[DeadLetterEvent] = []
        bus.subscribe(PRICES, group, handler)
        bus.subscribe(DEAD_LETTER, "audit", dead_letters_of(handler.sym, dead))
        events = await self.ten_prices_handled(bus, handler.sym, handler.handled)
        assert sorted(handler.handled) == sorted(e.event_id for e in events)
        assert dead == []

    async def test_a_batch_is_handed_again_after_a_handler_error(self, make_bus: MakeBus) -> None:
        """At least once: a handler that fails (not for good) gets the batch again; nothing is dead-lettered."""
        hiccup = FailsFirst(symbol("E"), 1, RuntimeError("a hiccup"))
        await self.each_handled_once_none_dead(make_bus(retries=3), "hiccup", hiccup)
        assert hiccup.calls >= 2

    async def test_a_transient_error_redelivers_the_batch_and_never_dead_letters_it(self, make_bus: MakeBus) -> None:
        flaky = FailsFirst(symbol("T"), 3, TransientError("store unavailable"))
        await self.each_handled_once_none_dead(make_bus(), "flaky", flaky)
        assert flaky.failures == 3

    async def test_a_transient_error_redelivers_only_the_failing_topic(self, make_bus: MakeBus) -> None:
        """A group's subscriptions to two topics: the second one's handler fails transiently; only its
        messages come again (on Kafka both topics share one consumer and often one fetched batch)."""
        publisher, bus = make_bus(), make_bus()
        sym = symbol("M")
        prices_seen: list[str] = []
        ticks_seen: list[str] = []
        failures = 0

        async def on_prices(events: list[Event]) -> None:
            prices_seen.extend(e.event_id for e in events if isinstance(e, PriceEvent) and e.symbol == sym)

        async def on_ticks(events: list[Event]) -> None:
            nonlocal failures
            mine = [e.event_id for e in events if isinstance(e, TickEvent) and e.symbol == sym]
            if mine and failures < 2:
                failures += 1
                raise TransientError("downstream unavailable")
            ticks_seen.extend(mine)

        bus.subscribe(PRICES, "multi", on_prices)
        bus.subscribe(TICKS, "multi", on_ticks)
        prices = [price(sym, i) for i in range(20)]
        ticks = [TickEvent(symbol=sym, source="test", ts=T0, price=float(i + 1), trade_id=str(i)) for i in range(20)]
        await publisher.start()
        await bus.start()
        await publisher.publish(PRICES, prices)
        await publisher.publish(TICKS, ticks)
        await wait_for(lambda: len(set(ticks_seen)) == len(ticks) and len(set(prices_seen)) == len(prices))
        await self.quiet(bus)
        assert failures == 2
        assert sorted(prices_seen) == sorted(e.event_id for e in prices)  # each once: not rewound with the ticks
        assert sorted(ticks_seen) == sorted(e.event_id for e in ticks)

    async def test_bad_messages_and_a_poison_event_are_dead_lettered_with_the_reason(self, make_bus: MakeBus) -> None:
        bus = make_bus(retries=1)
        sym = symbol("D")
        good: list[PriceEvent] = []
        dead: list[DeadLetterEvent] = []

        async def picky(events: list[Event]) -> None:
            mine = [e for e in events if isinstance(e, PriceEvent) and e.symbol == sym]
            if any(e.price == 3.0 for e in mine):
                raise RuntimeError("cannot handle 3")
            good.extend(mine)

        bus.subscribe(PRICES, "victim", picky)
        bus.subscribe(DEAD_LETTER, "audit", dead_letters_of(sym, dead))
        await bus.start()
        await bus.publish_raw(
            PRICES,
            [
                RawMessage(f"not json {sym}".encode(), key=sym),
                RawMessage(f'{{"symbol":"{sym}","ts":"2024-01-01T00:00:00Z","price":NaN}}'.encode(), key=sym),
                RawMessage(f'{{"symbol":"{sym}","ts":"2024-01-01T00:00:00Z","price":-1}}'.encode(), key=sym),
            ],
        )
        await bus.publish(PRICES, [price(sym, i) for i in range(5)])  # prices 1..5; 3 is poison
        await wait_for(lambda: len(dead) >= 4 and len(good) >= 4)
        await bus.publish(PRICES, [price(sym, 10)])  # the consumer goes on
        await wait_for(lambda: 11.0 in [e.price for e in good])
        await self.quiet(bus)
        assert sorted(e.price for e in good) == [1.0, 2.0, 4.0, 5.0, 11.0]
        reasons = sorted(d.reason for d in dead)
        assert len(dead) == 4, reasons
        assert sum("not JSON" in r for r in reasons) == 1
        assert sum("schema validation failed" in r and "price" in r for r in reasons) == 2
        poison = [d for d in dead if "cannot handle 3" in d.reason]
        assert len(poison) == 1 and '"price":3.0' in poison[0].payload
        assert all(d.topic == PRICES.name and d.key == sym and d.consumer == "victim" for d in dead)

    async def test_a_tombstone_never_reaches_a_handler(self, make_bus: MakeBus) -> None:
        bus = make_bus()
        r = rule()
        handled: list[str] = []
        dead: list[DeadLetterEvent] = []

        async def rules(events: list[Event]) -> None:
            handled.extend(e.event_id for e in events if isinstance(e, AlertRuleEvent) and e.rule_id == r.rule_id)

        bus.subscribe(ALERT_RULES, "tombstones", rules)
        bus.subscribe(DEAD_LETTER, "audit", dead_letters_of(r.rule_id, dead))
        await bus.start()
        gone = AlertRuleEvent.model_validate(r.model_dump() | {"deleted": True, "event_id": uuid.uuid4().hex})
        again = rule(r.rule_id)
        await bus.publish(ALERT_RULES, [r, gone])
        await bus.publish_tombstone(ALERT_RULES, r.rule_id)
        await bus.publish(ALERT_RULES, [again])
        await wait_for(lambda: again.event_id in handled)
        await self.quiet(bus)
        assert handled == [r.event_id, gone.event_id, again.event_id]
        assert dead == []

    async def test_the_trace_continues_from_publisher_to_handler(self, make_bus: MakeBus) -> None:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        bus = make_bus(tracer_provider=provider)
        sym = symbol("TC")
        got: list[PriceEvent] = []
        # from the topic's end on: a traced message deep in a backlog batch may be neither parent nor link
        bus.subscribe(PRICES, "traced", prices_of(sym, got), delivery=Delivery.TAIL)
        await bus.start()
        with provider.get_tracer("test").start_as_current_span("origin") as origin:
            await bus.publish(PRICES, [price(sym, 0)])
            trace_id = origin.get_span_context().trace_id
        await wait_for(lambda: bool(got))
        await self.quiet(bus)
        spans = exporter.get_finished_spans()
        publish = [s for s in spans if s.context.trace_id == trace_id and s.name == f"{PRICES.name} publish"]
        assert publish and publish[0].kind.name == "PRODUCER"
        # the handler's span continues the message's trace: as its child when the message opens the batch,
        # through a span link otherwise (OpenTelemetry's messaging conventions for batches)
        related = [
            s
            for s in spans
            if s.name == f"{PRICES.name} process"
            and (s.context.trace_id == trace_id or any(link.context.trace_id == trace_id for link in s.links))
        ]
        assert related and related[0].kind.name == "CONSUMER"

    # --- deliveries -----------------------------------------------------------------------------------

    async def test_shared_splits_a_topic_across_the_instances_of_a_group(self, make_bus: MakeBus) -> None:
        """Each message to one instance of the group; a key always to the same one; both get a share."""
        one, two = make_bus(), make_bus()
        sym = symbol("S")
        seen: dict[int, list[PriceEvent]] = {1: [], 2: []}

        def of_run(n: int) -> Callable[[list[Any]], Any]:
            async def handler(events: list[Event]) -> None:
                seen[n].extend(e for e in events if isinstance(e, PriceEvent) and e.symbol.startswith(sym))

            return handler

        one.subscribe(PRICES, "split", of_run(1))
        two.subscribe(PRICES, "split", of_run(2))
        await one.start()
        await two.start()
        # until both hold partitions (on Kafka the second member's join rebalances the group)
        warm = 0
        while not (seen[1] and seen[2]):
            assert warm < 60, "the group never shared the topic out"
            await one.publish(PRICES, [price(f"{sym}W{k}", warm) for k in range(30)])
            warm += 1
            await asyncio.sleep(0.5)
        await self.quiet(one)
        seen[1].clear()
        seen[2].clear()
        events = [price(f"{sym}K{k}", i) for i in range(5) for k in range(40)]
        await one.publish(PRICES, events)
        await wait_for(lambda: len(seen[1]) + len(seen[2]) >= len(events))
        await self.quiet(one)
        ids = [e.event_id for e in seen[1] + seen[2]]
        assert sorted(ids) == sorted(e.event_id for e in events)  # each exactly once
        keys = [{e.symbol for e in seen[n]} for n in (1, 2)]
        assert keys[0] and keys[1] and not keys[0] & keys[1]

    async def test_broadcast_gives_every_instance_every_message(self, make_bus: MakeBus) -> None:
        one, two = make_bus(), make_bus()
        r = rule()
        seen: dict[int, list[str]] = {1: [], 2: []}
        for n, bus in ((1, one), (2, two)):

            async def rules(events: list[Event], into: list[str] = seen[n]) -> None:
                into.extend(e.rule_id for e in events if isinstance(e, AlertRuleEvent))

            bus.subscribe(ALERT_RULES, "rules", rules, delivery=Delivery.BROADCAST)
        await one.start()
        await two.start()
        await one.publish(ALERT_RULES, [r])
        await wait_for(lambda: r.rule_id in seen[1] and r.rule_id in seen[2])

    async def test_broadcast_rereads_the_whole_topic_at_every_start(self, make_bus: MakeBus) -> None:
        self.needs_history()
        r = rule()
        publisher = make_bus()
        await publisher.start()
        await publisher.publish(ALERT_RULES, [r])
        for _ in range(2):  # a start, then a restart: both read what was published before them
            bus = make_bus()
            seen: list[str] = []

            async def rules(events: list[Event], seen: list[str] = seen) -> None:
                seen.extend(e.rule_id for e in events if isinstance(e, AlertRuleEvent))

            bus.subscribe(ALERT_RULES, "rules", rules, delivery=Delivery.BROADCAST)
            await bus.start()
            await wait_for(lambda seen=seen: r.rule_id in seen)
            await bus.stop()

    async def test_tail_receives_only_what_is_published_after_its_start(self, make_bus: MakeBus) -> None:
        publisher = make_bus()
        sym = symbol("TL")
        await publisher.start()
        await publisher.publish(PRICES, [price(sym, 0)])  # before any tail instance runs
        for run in (1, 2):  # a restart reads none of the history either (the first run's price included)
            seen: list[PriceEvent] = []
            bus = make_bus()
            bus.subscribe(PRICES, "live", prices_of(sym, seen), delivery=Delivery.TAIL)
            await bus.start()
            await publisher.publish(PRICES, [price(sym, run)])
            await wait_for(lambda seen=seen: bool(seen))
            await self.quiet(bus)
            assert [e.price for e in seen] == [float(run + 1)]
            await bus.stop()

    async def test_tail_others_leaves_out_what_its_own_instance_published(self, make_bus: MakeBus) -> None:
        me, other = make_bus(), make_bus()
        sym = symbol("O")
        seen: list[PriceEvent] = []
        me.subscribe(PRICES, "others", prices_of(sym, seen), delivery=Delivery.TAIL_OTHERS)
        await me.start()
        await other.start()
        for mine, theirs in ((0, 1), (2, 3)):
            await me.publish(PRICES, [price(sym, mine)])
            await other.publish(PRICES, [price(sym, theirs)])
        await wait_for(lambda: len(seen) >= 2)
        await self.quiet(me)
        assert [e.price for e in seen] == [2.0, 4.0]

    def test_finish_batch_on_rebalance_is_for_shared_groups_only(self, make_bus: MakeBus) -> None:
        bus = make_bus()
        with pytest.raises(ValueError, match="SHARED"):
            bus.subscribe(PRICES, "g", prices_of("X", []), delivery=Delivery.TAIL, finish_batch_on_rebalance=True)

        async def hook(a: Assignment) -> None:
            return None

        for kw in ({"on_assign": hook}, {"on_revoke": hook}):
            with pytest.raises(ValueError, match="SHARED"):
                bus.subscribe(PRICES, "g", prices_of("X", []), delivery=Delivery.BROADCAST, **kw)  # type: ignore[arg-type]

    # --- partition ownership (state owned per partition) -----------------------------------------------

    async def test_one_instance_is_assigned_every_partition_and_every_key(self, make_bus: MakeBus) -> None:
        """``on_assign`` names the topic, every partition, and maps each key into them (as the messages go)."""
        bus = make_bus()
        sym = symbol("H")
        got: list[PriceEvent] = []
        assigns: list[Assignment] = []

        async def on_assign(a: Assignment) -> None:
            assigns.append(a)

        bus.subscribe(PRICES, "hooks", prices_of_prefix(sym, got), on_assign=on_assign)
        await bus.start()
        await wait_for(lambda: bool(assigns))
        await bus.publish(PRICES, [price(f"{sym}{k}", 1) for k in range(40)])
        await wait_for(lambda: len(got) == 40)
        await self.quiet(bus)
        assert len(assigns) == 1 and assigns[0].topic is PRICES
        whole = assigns[0].partitions
        assert len(whole) >= 2 and {assigns[0].partition_of(e.symbol) for e in got} <= whole
        assert len({assigns[0].partition_of(e.symbol) for e in got}) >= 2  # keys spread over partitions

    async def test_a_joining_instance_takes_the_partitions_the_first_gives_up(self, make_bus: MakeBus) -> None:
        """Two instances of a group: after the rebalance their assignments split the partitions, each message
        reaches the instance whose assignment holds its key, and the first was told what it lost."""
        if not self.rebalances:
            pytest.skip("this adapter assigns every partition once and never rebalances")
        one, two = make_bus(), make_bus()
        sym = symbol("J")
        current: dict[int, Assignment] = {}
        revoked: dict[int, list[frozenset[int]]] = {1: [], 2: []}
        got: dict[int, list[PriceEvent]] = {1: [], 2: []}
        for n, bus in ((1, one), (2, two)):

            async def on_assign(a: Assignment, n: int = n) -> None:
                current[n] = a

            async def on_revoke(a: Assignment, n: int = n) -> None:
                revoked[n].append(a.partitions)
                current.pop(n, None)

            bus.subscribe(PRICES, "hooks2", prices_of_prefix(sym, got[n]), on_assign=on_assign, on_revoke=on_revoke)
        await one.start()
        await wait_for(lambda: 1 in current)
        whole = current[1].partitions
        await two.start()
        await wait_for(lambda: 1 in current and 2 in current and current[1].partitions | current[2].partitions == whole)
        assert current[1].partitions and current[2].partitions and not current[1].partitions & current[2].partitions
        assert whole in revoked[1]  # the eager protocol: everything back first, then the new split
        await self.quiet(one)
        got[1].clear()
        got[2].clear()
        await one.publish(PRICES, [price(f"{sym}{k}", 1) for k in range(40)])
        await wait_for(lambda: len(got[1]) + len(got[2]) == 40)
        for n in (1, 2):
            assert all(current[n].holds(e.symbol) for e in got[n])
        assert got[1] and got[2]

    # --- batch topics -------------------------------------------------------------------------------

    async def test_rows_are_buffered_and_sent_one_message_per_partition(self, make_bus: MakeBus) -> None:
        """Many small publishes within the linger become a few messages, each of one partition's tokens, and
        every row arrives once."""
        bus = make_bus()
        prefix = symbol("R")
        seen: list[tuple[str, str]] = []
        sizes: list[int] = []
        bus.subscribe(TICKS_V2, "rows", rows_of(prefix, seen, sizes))
        await bus.start()
        await self.warm_up(bus, TICKS_V2, prefix, seen)
        seen.clear()
        sizes.clear()
        syms = [f"{prefix}{k}" for k in range(20)]
        sent = [tick(s, i) for i in range(5) for s in syms]
        await asyncio.gather(*(bus.publish_rows(TICKS_V2, TickBatch.from_events([t])) for t in sent))
        await wait_for(lambda: len(seen) >= len(sent))
        await self.quiet(bus)
        assert sorted(seen) == sorted((t.symbol, t.trade_id or "") for t in sent)
        assert len(sizes) <= 8, f"{len(sent)} rows in {len(sizes)} messages: not batched"

    async def test_a_full_buffer_goes_out_without_waiting_for_the_linger(self, make_bus: MakeBus) -> None:
        bus = make_bus()
        sym = symbol("F")
        seen: list[tuple[str, str]] = []
        bus.subscribe(TICKS_V2, "full", rows_of(sym, seen))
        await bus.start()
        await self.warm_up(bus, TICKS_V2, sym, seen)
        sent = TickBatch.from_events([tick(sym, i) for i in range(ROW_LINGER_ROWS)])
        loop = asyncio.get_running_loop()
        started = loop.time()
        await bus.publish_rows(TICKS_V2, sent)
        await wait_for(lambda: len(seen) >= ROW_LINGER_ROWS + 1)
        assert loop.time() - started < 30

    async def test_a_token_rows_and_keyed_events_reach_the_same_member(self, make_bus: MakeBus) -> None:
        """A co-partitioned group: ticks.v1 keyed by the symbol and ticks.v2 rows of the same symbol go to one
        member of the group. Four members: with six partitions round-robin would split the pair there."""
        members = [make_bus() for _ in range(4)]
        prefix = symbol("P")
        seen: list[list[tuple[str, str]]] = [[] for _ in members]
        for bus, into in zip(members, seen, strict=True):
            bus.subscribe(TICKS, "copart", rows_of(prefix, into), co_partitioned=True)
            bus.subscribe(TICKS_V2, "copart", rows_of(prefix, into), co_partitioned=True)
        for bus in members:
            await bus.start()
        warm = 0
        while not all(seen):
            assert warm < 90, "the group never shared the topics out"
            await members[0].publish(TICKS, [tick(f"{prefix}W{k}", warm) for k in range(40)])
            warm += 1
            await asyncio.sleep(0.5)
        await self.quiet(members[0])
        for into in seen:
            into.clear()
        syms = [f"{prefix}K{k}" for k in range(60)]
        await members[0].publish(TICKS, [tick(s, 1) for s in syms])
        await members[0].publish_rows(TICKS_V2, TickBatch.from_events([tick(s, 2) for s in syms]))
        await wait_for(lambda: sum(map(len, seen)) >= 2 * len(syms))
        await self.quiet(members[0])
        got = sorted(row for into in seen for row in into)
        assert got == sorted((s, t) for s in syms for t in ("1", "2"))  # each once
        held = [{s for s, _ in into} for into in seen]
        assert all(not a & b for i, a in enumerate(held) for b in held[i + 1 :]), "a token's rows on two members"

    async def test_a_misplaced_v1_event_goes_to_the_misplaced_handler(self, make_bus: MakeBus) -> None:
        bus = make_bus()
        sym = symbol("M")
        good: list[tuple[str, str]] = []
        moved: list[tuple[str, str]] = []
        bus.subscribe(TICKS, "placed", rows_of(sym, good), on_misplaced=rows_of(sym, moved))
        await bus.start()
        await self.warm_up(bus, TICKS, sym, good)
        good.clear()
        right, wrong = tick(sym, 1), tick(sym, 2)
        await bus.publish(TICKS, [right])
        await bus.publish_raw(TICKS, [RawMessage(wrong.model_dump_json().encode(), key=f"not-{sym}")])
        await wait_for(lambda: bool(good) and bool(moved))
        await self.quiet(bus)
        assert good == [(sym, "1")] and moved == [(sym, "2")]

    async def test_a_bad_row_dead_letters_its_batch_naming_the_row(self, make_bus: MakeBus) -> None:
        bus = make_bus()
        sym = symbol("D")
        seen: list[tuple[str, str]] = []
        dead: list[DeadLetterEvent] = []
        bus.subscribe(TICKS_V2, "victim", rows_of(sym, seen))
        bus.subscribe(DEAD_LETTER, "dlq-watch", dead_letters_of(sym, dead), delivery=Delivery.TAIL)
        await bus.start()
        doc = TickBatch.from_events([tick(sym, 1), tick(sym, 2)]).model_dump(mode="json")
        doc["price"][1] = -1.0
        await bus.publish_raw(TICKS_V2, [RawMessage(json.dumps(doc).encode(), key=None)])
        await bus.publish_rows(TICKS_V2, TickBatch.from_events([tick(sym, 3)]))
        await wait_for(lambda: bool(seen) and bool(dead))
        await self.quiet(bus)
        assert seen == [(sym, "3")]
        assert dead[0].topic == TICKS_V2.name and dead[0].consumer == "victim"
        assert "price.1" in dead[0].reason

    async def test_v1_copies_skip_groups_that_read_the_rows(self, make_bus: MakeBus) -> None:
        """publish_v1_copy: a group reading v1 alone gets the copies; one reading v1 and v2 only the rows."""
        bus = make_bus()
        sym = symbol("C")
        both: list[tuple[str, str]] = []
        v1_only: list[tuple[str, str]] = []
        bus.subscribe(TICKS, "both", rows_of(sym, both))
        bus.subscribe(TICKS_V2, "both", rows_of(sym, both))
        bus.subscribe(TICKS, "v1-only", rows_of(sym, v1_only))
        await bus.start()
        await self.warm_up(bus, TICKS, sym, v1_only)
        await wait_for(lambda: bool(both))
        await self.quiet(bus)
        both.clear()
        v1_only.clear()
        events = [tick(sym, i) for i in range(5)]
        await bus.publish_rows(TICKS_V2, TickBatch.from_events(events))
        await bus.publish_v1_copy(TICKS, events)
        await wait_for(lambda: len(both) >= 5 and len(v1_only) >= 5)
        await self.quiet(bus)
        assert sorted(both) == sorted(v1_only) == sorted((sym, str(i)) for i in range(5))

    async def warm_up(self, bus: Bus, topic: Any, sym: str, seen: list[tuple[str, str]]) -> None:
        """Until the subscription receives (on Kafka a new group takes a moment to get its partitions)."""
        for i in range(120):
            if seen:
                return
            if topic is TICKS_V2:
                await bus.publish_rows(topic, TickBatch.from_events([tick(sym, 1000 + i)]))
            else:
                await bus.publish(topic, [tick(sym, 1000 + i)])
            await asyncio.sleep(0.5)
        raise AssertionError("the subscription never received")

    # --- the log --------------------------------------------------------------------------------------

    async def test_read_log_returns_the_valid_events_up_to_the_end(self, make_bus: MakeBus) -> None:
        self.needs_history()
        bus = make_bus()
        await bus.start()
        r = rule()
        gone = AlertRuleEvent.model_validate(r.model_dump() | {"deleted": True, "event_id": uuid.uuid4().hex})
        await bus.publish(ALERT_RULES, [r, gone])
        await bus.publish_tombstone(ALERT_RULES, r.rule_id)
        await bus.publish_raw(ALERT_RULES, [RawMessage(b"garbage", key=r.rule_id)])
        mine = [e for e in await bus.read_log(ALERT_RULES) if getattr(e, "rule_id", "") == r.rule_id]
        assert [(e.event_id, e.deleted) for e in mine] == [(r.event_id, False), (gone.event_id, True)]  # type: ignore[attr-defined]

    async def test_read_log_since_a_time(self, make_bus: MakeBus) -> None:
        self.needs_history()
        bus = make_bus()
        await bus.start()
        early, late = rule(), rule()
        await bus.publish(ALERT_RULES, [early])
        await asyncio.sleep(0.05)
        since_ms = int(datetime.now(UTC).timestamp() * 1000)
        await asyncio.sleep(0.05)
        await bus.publish(ALERT_RULES, [late])
        ids = {getattr(e, "rule_id", "") for e in await bus.read_log(ALERT_RULES, since_ms=since_ms)}
        assert late.rule_id in ids and early.rule_id not in ids
        assert await bus.read_log(ALERT_RULES, since_ms=since_ms + 3_600_000) == []

    async def test_read_log_until_what_a_group_committed(self, make_bus: MakeBus) -> None:
        """What a service had fully processed: a restarted service rebuilds up to there, then consumes on."""
        self.needs_history()
        bus = make_bus()
        handled: list[str] = []
        done, later = [rule(), rule()], rule()
        wanted = {r.rule_id for r in done}

        async def rules(events: list[Event]) -> None:
            handled.extend(e.rule_id for e in events if isinstance(e, AlertRuleEvent) and e.rule_id in wanted)

        bus.subscribe(ALERT_RULES, "keeper", rules)
        await bus.start()
        await bus.publish(ALERT_RULES, done)
        await wait_for(lambda: len(handled) == 2)
        await bus.stop_consuming()  # its offsets committed; it consumes no more
        await bus.publish(ALERT_RULES, [later])
        ids = [getattr(e, "rule_id", "") for e in await bus.read_log(ALERT_RULES, until_group="keeper")]
        assert sorted(i for i in ids if i in wanted) == sorted(wanted) and later.rule_id not in ids
        assert later.rule_id in {getattr(e, "rule_id", "") for e in await bus.read_log(ALERT_RULES)}
