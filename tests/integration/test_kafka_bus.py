"""The Kafka adapter against the real broker: order, dead letters, redelivery, trace propagation."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tokenpulse_shared.bus import RawMessage, TransientError
from tokenpulse_shared.bus.kafka import KafkaBus
from tokenpulse_shared.events import DeadLetterEvent, Event, PriceEvent, TickEvent
from tokenpulse_shared.topics import DEAD_LETTER, PRICES, SIGNALS, TICKS

pytestmark = pytest.mark.kafka
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def price(symbol: str, i: int) -> PriceEvent:
    return PriceEvent(symbol=symbol, ts=T0.replace(minute=i % 60, hour=i // 60 % 24), price=float(i + 1))


async def wait_for(cond: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


def new_bus(bootstrap: str, **kw: object) -> KafkaBus:
    # a fresh group prefix per test: each test reads the topics from the start independently
    return KafkaBus(bootstrap, group_prefix=f"test-{uuid.uuid4().hex[:8]}", backoff_s=0.01, **kw)  # type: ignore[arg-type]


async def run_with(bus: KafkaBus, body: Callable[[], Awaitable[None]]) -> None:
    await bus.start()
    try:
        await body()
    finally:
        await bus.stop()


async def test_per_key_order_and_no_loss_through_the_broker(kafka_bootstrap: str) -> None:
    bus = new_bus(kafka_bootstrap)
    run_id = uuid.uuid4().hex[:6].upper()
    symbols = [f"A{run_id}", f"B{run_id}"]
    seen: dict[str, list[float]] = {s: [] for s in symbols}

    async def handler(events: list[Event]) -> None:
        for e in events:
            if isinstance(e, PriceEvent) and e.symbol in seen:
                seen[e.symbol].append(e.price)

    bus.subscribe(PRICES, "order", handler)

    async def body() -> None:
        for i in range(0, 300, 50):
            await bus.publish(PRICES, [price(s, j) for j in range(i, i + 50) for s in symbols])
        await wait_for(lambda: all(len(v) >= 300 for v in seen.values()))

    await run_with(bus, body)
    for s in symbols:
        assert seen[s] == [float(i + 1) for i in range(300)]


async def test_malformed_messages_are_dead_lettered_with_reason_and_payload(kafka_bootstrap: str) -> None:
    bus = new_bus(kafka_bootstrap)
    marker = uuid.uuid4().hex
    SYM = "DL" + marker[:6].upper()
    good: list[PriceEvent] = []
    dead: list[DeadLetterEvent] = []

    async def handler(events: list[Event]) -> None:
        good.extend(e for e in events if isinstance(e, PriceEvent) and e.symbol == SYM)

    async def audit(events: list[Event]) -> None:
        dead.extend(e for e in events if isinstance(e, DeadLetterEvent) and marker in e.payload)

    bus.subscribe(PRICES, "victim", handler)
    bus.subscribe(DEAD_LETTER, "audit", audit)

    async def body() -> None:
        ok = PriceEvent(symbol=SYM, ts=T0, price=5.0)
        await bus.publish_raw(
            PRICES,
            [
                RawMessage(f"not json {marker}".encode(), key=SYM),
                RawMessage(
                    f'{{"symbol":"{SYM}","ts":"2024-01-01T00:00:00Z","price":NaN,"m":"{marker}"}}'.encode(), key=SYM
                ),
                RawMessage(
                    f'{{"symbol":"{SYM}","ts":"2024-01-01T00:00:00Z","price":-1,"m":"{marker}"}}'.encode(), key=SYM
                ),
            ],
        )
        await bus.publish(PRICES, [ok])
        await wait_for(lambda: len(dead) >= 3 and len(good) >= 1)

    await run_with(bus, body)
    assert len(good) == 1
    reasons = sorted(d.reason for d in dead)
    assert any("not JSON" in r for r in reasons)
    assert sum("schema validation failed" in r for r in reasons) == 2
    assert all(d.topic == PRICES.name and d.key == SYM for d in dead)


async def test_transient_failure_is_redelivered_not_dead_lettered(kafka_bootstrap: str) -> None:
    bus = new_bus(kafka_bootstrap)
    symbol = "TR" + uuid.uuid4().hex[:6].upper()
    failures = 0
    delivered: list[str] = []

    async def flaky(events: list[Event]) -> None:
        nonlocal failures
        mine = [e for e in events if isinstance(e, PriceEvent) and e.symbol == symbol]
        if mine and failures < 2:
            failures += 1
            raise TransientError("store unavailable")
        delivered.extend(e.event_id for e in mine)

    bus.subscribe(PRICES, "flaky", flaky)
    events = [price(symbol, i) for i in range(10)]

    async def body() -> None:
        await bus.publish(PRICES, events)
        await wait_for(lambda: set(delivered) >= {e.event_id for e in events})

    await run_with(bus, body)
    assert failures == 2
    assert set(delivered) == {e.event_id for e in events}


async def test_trace_context_flows_from_publisher_to_consumer(kafka_bootstrap: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    bus = new_bus(kafka_bootstrap, tracer_provider=provider)
    symbol = "TC" + uuid.uuid4().hex[:6].upper()
    got: list[Event] = []

    async def handler(events: list[Event]) -> None:
        got.extend(e for e in events if isinstance(e, PriceEvent) and e.symbol == symbol)

    # from the topic's end on: the history other tests left on this broker holds many traces, and a batch
    # links up to MAX_LINKS of them, so a traced message deep in a backlog batch may be neither parent nor link
    bus.subscribe(PRICES, "traced", handler, tail=True)
    tracer = provider.get_tracer("test")

    async def body() -> None:
        while not got:  # untraced warm-up prices until the consumer's position is set and it sees one
            await bus.publish(PRICES, [price(symbol, 0)])
            await asyncio.sleep(0.3)
        await asyncio.sleep(0.5)  # the warm-up prices still in flight are delivered
        got.clear()
        with tracer.start_as_current_span("origin") as origin:
            await bus.publish(PRICES, [price(symbol, 1)])
            trace_id = origin.get_span_context().trace_id
        await wait_for(lambda: any(isinstance(e, PriceEvent) and e.price == 2.0 for e in got))
        await asyncio.sleep(0.5)
        spans = exporter.get_finished_spans()
        publish = next(s for s in spans if s.context.trace_id == trace_id and s.name == f"{PRICES.name} publish")
        assert publish.kind.name == "PRODUCER"
        # the consumer's process span continues the message's trace: as its parent when the message
        # opens the batch, as a span link otherwise (OpenTelemetry messaging conventions for batches)
        processes = [s for s in spans if s.name == f"{PRICES.name} process"]
        related = [
            p
            for p in processes
            if (p.parent is not None and p.context.trace_id == trace_id)
            or any(link.context.trace_id == trace_id for link in p.links)
        ]
        assert related and related[0].kind.name == "CONSUMER"

    await run_with(bus, body)


async def test_a_broadcast_subscription_rereads_the_compacted_topic_at_every_start(kafka_bootstrap: str) -> None:
    from tokenpulse_shared.events import AlertCondition, AlertRuleEvent
    from tokenpulse_shared.topics import ALERT_RULES

    rule = AlertRuleEvent(
        rule_id=f"r-{uuid.uuid4().hex[:10]}",
        owner="o",
        symbol="BTC",
        condition=AlertCondition(kind="price_above", value=1.0),
    )
    for start in range(2):  # the same service name twice: a restart
        bus = KafkaBus(kafka_bootstrap, group_prefix="restart-test", backoff_s=0.01)
        seen: list[str] = []

        async def rules(events: list[Event], seen: list[str] = seen) -> None:
            seen.extend(e.rule_id for e in events if isinstance(e, AlertRuleEvent))

        bus.subscribe(ALERT_RULES, "alerts", rules, broadcast=True)

        async def body(seen: list[str] = seen, start: int = start, bus: KafkaBus = bus) -> None:
            if start == 0:
                await bus.publish(ALERT_RULES, [rule])
            await wait_for(lambda: rule.rule_id in seen)

        await run_with(bus, body)


async def test_read_log_returns_the_topic_up_to_its_end(kafka_bootstrap: str) -> None:
    from tokenpulse_shared.events import AlertCondition, AlertRuleEvent
    from tokenpulse_shared.topics import ALERT_RULES

    bus = new_bus(kafka_bootstrap)
    run_id = uuid.uuid4().hex[:8]

    async def body() -> None:
        rule = AlertRuleEvent(
            rule_id=f"r-{run_id}", owner="o", symbol="BTC", condition=AlertCondition(kind="price_above", value=1)
        )
        gone = AlertRuleEvent.model_validate(rule.model_dump() | {"deleted": True, "event_id": uuid.uuid4().hex})
        await bus.publish(ALERT_RULES, [rule, gone])
        await bus.publish_tombstone(ALERT_RULES, rule.rule_id)
        await bus.publish_raw(ALERT_RULES, [RawMessage(b"garbage", key=f"r-{run_id}")])
        mine = [e for e in await bus.read_log(ALERT_RULES) if getattr(e, "rule_id", "") == rule.rule_id]
        assert [(e.event_id, e.deleted) for e in mine] == [(rule.event_id, False), (gone.event_id, True)]  # type: ignore[attr-defined]
        later = await bus.read_log(ALERT_RULES, since_ms=int(datetime.now(UTC).timestamp() * 1000) + 60_000)
        assert later == []

    await run_with(bus, body)


async def test_a_tail_subscription_sees_only_what_is_published_after_its_start(kafka_bootstrap: str) -> None:
    """The gateway follows prices this way: no replay of the topic's history at every start, nothing committed."""
    from tokenpulse_shared.events import PriceEvent
    from tokenpulse_shared.topics import PRICES

    symbol = f"T{uuid.uuid4().hex[:6].upper()}"
    early = new_bus(kafka_bootstrap)
    await run_with(early, lambda: early.publish(PRICES, [PriceEvent(symbol=symbol, ts=datetime.now(UTC), price=1.0)]))
    seen: list[float] = []

    async def prices(events: list[Event]) -> None:
        seen.extend(e.price for e in events if isinstance(e, PriceEvent) and e.symbol == symbol)

    for start in range(2):  # a restart reads none of the history either (its first run's prices included)
        bus = new_bus(kafka_bootstrap)
        bus.subscribe(PRICES, "gateway-live", prices, tail=True)
        price = 2.0 + start

        async def body(bus: KafkaBus = bus, price: float = price) -> None:
            while not seen:  # keep publishing until the consumer's position is set and it sees one
                await bus.publish(PRICES, [PriceEvent(symbol=symbol, ts=datetime.now(UTC), price=price)])
                await asyncio.sleep(0.5)

        seen.clear()
        await asyncio.wait_for(run_with(bus, body), 60)
        assert seen and set(seen) == {price}  # never a price published before this start


async def test_a_skip_own_subscription_sees_what_other_instances_publish_not_its_own(kafka_bootstrap: str) -> None:
    """The alerts service follows the other replicas' firings this way (its own it knows already)."""
    from tokenpulse_shared.events import PriceEvent
    from tokenpulse_shared.topics import PRICES

    symbol = f"O{uuid.uuid4().hex[:6].upper()}"
    seen: list[float] = []
    last = asyncio.Event()

    async def prices(events: list[Event]) -> None:
        seen.extend(e.price for e in events if isinstance(e, PriceEvent) and e.symbol == symbol)
        if 3.0 in seen:
            last.set()

    me, other = new_bus(kafka_bootstrap), new_bus(kafka_bootstrap)
    me.subscribe(PRICES, "own-filter", prices, tail=True, skip_own=True)
    await other.start()

    async def body() -> None:
        # both publish until the other's price arrives (the tail starts from the end once positioned)
        while 2.0 not in seen:
            await me.publish(PRICES, [PriceEvent(symbol=symbol, ts=datetime.now(UTC), price=1.0)])
            await other.publish(PRICES, [PriceEvent(symbol=symbol, ts=datetime.now(UTC), price=2.0)])
            await asyncio.sleep(0.5)
        await me.publish(PRICES, [PriceEvent(symbol=symbol, ts=datetime.now(UTC), price=1.0)])
        await other.publish(PRICES, [PriceEvent(symbol=symbol, ts=datetime.now(UTC), price=3.0)])
        await last.wait()

    try:
        await asyncio.wait_for(run_with(me, body), 60)
    finally:
        await other.stop()
    assert 1.0 not in seen and {2.0, 3.0} <= set(seen)


async def test_a_groups_topics_share_one_consumer_and_a_transient_failure_rewinds_only_its_topic(
    kafka_bootstrap: str,
) -> None:
    """A service's subscriptions in one group are one Kafka consumer (one member joins, no rebalance per
    topic); when the second topic's handler fails transiently, only its messages come again."""
    bus = new_bus(kafka_bootstrap)
    symbol = "MT" + uuid.uuid4().hex[:6].upper()
    prices_seen: list[str] = []
    ticks_seen: list[str] = []
    failures = 0

    async def on_prices(events: list[Event]) -> None:
        prices_seen.extend(e.event_id for e in events if isinstance(e, PriceEvent) and e.symbol == symbol)

    async def on_ticks(events: list[Event]) -> None:
        nonlocal failures
        mine = [e.event_id for e in events if isinstance(e, TickEvent) and e.symbol == symbol]
        if mine and failures < 2:
            failures += 1
            raise TransientError("downstream unavailable")
        ticks_seen.extend(mine)

    bus.subscribe(PRICES, "multi", on_prices)
    bus.subscribe(TICKS, "multi", on_ticks)
    bus.subscribe(SIGNALS, "multi", on_prices, tail=True)  # reads from the end: a consumer of its own
    consumers = bus._consumers()
    assert [[s.topic for s in c] for c in consumers] == [[PRICES, TICKS], [SIGNALS]]
    prices = [price(symbol, i) for i in range(20)]
    ticks = [TickEvent(symbol=symbol, source="test", ts=T0, price=float(i + 1), trade_id=str(i)) for i in range(20)]
    publisher = new_bus(kafka_bootstrap)

    async def publish() -> None:  # both topics hold messages before the consumer's first fetch
        await publisher.publish(PRICES, prices)
        await publisher.publish(TICKS, ticks)

    await run_with(publisher, publish)

    async def body() -> None:
        await wait_for(lambda: len(set(ticks_seen)) == len(ticks) and len(set(prices_seen)) == len(prices))
        await asyncio.sleep(1.0)  # anything redelivered would arrive now

    await run_with(bus, body)
    assert failures == 2
    assert sorted(prices_seen) == sorted(e.event_id for e in prices)  # each once: not rewound with the ticks
    assert sorted(ticks_seen) == sorted(e.event_id for e in ticks)
