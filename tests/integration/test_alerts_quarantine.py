"""A rule or firing record the alerts service cannot read at start is quarantined, never a reason not to
start: logged, dead-lettered (the same dead letter at every start), counted in ``ctx.status`` (``/readyz``).
Embedded: rows of the real chDB store; distributed: messages on the real broker's topics via ``read_log``."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from tokenpulse_alerts.service import AlertsService
from tokenpulse_shared import rule_table
from tokenpulse_shared.bus import RawMessage
from tokenpulse_shared.bus.kafka import KafkaBus
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.events import AlertCondition, AlertRuleEvent, DeadLetterEvent, Event
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.store import Store
from tokenpulse_shared.topics import ALERT_RULES, ALERTS, DEAD_LETTER

NOW = datetime.now(UTC).replace(microsecond=0)


def good_rule(rule_id: str) -> AlertRuleEvent:
    return AlertRuleEvent(
        rule_id=rule_id, owner="k1", symbol="BTC", condition=AlertCondition(kind="price_above", value=100)
    )


def deep_rule_text(rule_id: str, levels: int = 120) -> str:
    """A rule as an older version, which took any nesting, stored and published it."""
    cond: dict[str, Any] = {"kind": "price_above", "value": 1e6}
    for _ in range(levels - 1):
        cond = {"kind": "all", "all": [cond]}
    return json.dumps(good_rule(rule_id).model_dump(mode="json") | {"condition": cond})


async def insert_firings(store: Store, rows: list[dict[str, Any]]) -> None:
    columns = ["firing_id", "rule_id", "owner", "symbol", "ts", "price", "message", "trigger_event_id", "status"]
    columns += ["deliveries", "version", "event_id", "produced_at"]
    await store.insert("alert_firings", [[row[c] for row in rows] for c in columns], columns)


def firing_row(firing_id: str, **over: Any) -> dict[str, Any]:
    row = {"firing_id": firing_id, "rule_id": "rule_good", "owner": "k1", "symbol": "BTC", "ts": NOW}
    row |= {"price": 101.0, "message": "BTC crossed", "trigger_event_id": "e1", "status": "delivered"}
    row |= {"deliveries": "[]", "version": 1, "event_id": f"fire-{firing_id}", "produced_at": NOW}
    return row | over


async def start_embedded(store: Store) -> tuple[AlertsService, Context, list[DeadLetterEvent]]:
    bus = InMemoryBus()
    letters: list[DeadLetterEvent] = []

    async def sink(events: list[Event]) -> None:
        letters.extend(e for e in events if isinstance(e, DeadLetterEvent))

    ctx = Context(settings=Settings(), bus=bus, store=store, embedded=True)
    service = AlertsService()
    service.register(ctx)
    bus.subscribe(DEAD_LETTER, "test", sink)
    await bus.start()
    await service.start(ctx)
    await bus.drain()
    await service.stop()
    await bus.stop()
    return service, ctx, letters


async def test_unreadable_rows_in_the_store_are_quarantined_and_the_service_starts(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    await rule_table.save(store, good_rule("rule_good"))
    deep = deep_rule_text("rule_deep")
    await rule_table.save_row(store, "rule_deep", "k1", "BTC", deep, NOW, False)
    await rule_table.save_row(store, "rule_junk", "k1", "BTC", '{"rule_id": ', NOW, False)
    await rule_table.save_row(store, "rule_gone", "k1", "BTC", '{"rule_id": ', NOW, True)  # deleted: never read
    await insert_firings(
        store,
        [firing_row("f-good"), firing_row("f-json", deliveries="[{"), firing_row("f-symbol", symbol="btc usd")],
    )

    service, ctx, letters = await start_embedded(store)

    assert service.ready.is_set() and set(service.book.rules) == {"rule_good"}
    assert service.firings == {"f-good": "delivered"}
    assert (ctx.status["quarantined_rules"], ctx.status["quarantined_firings"]) == (2, 2)
    by_key = {(d.topic, d.key): d for d in letters}
    assert (
        set(by_key)
        == {
            (ALERT_RULES.name, "rule_deep"),
            (ALERT_RULES.name, "rule_junk"),
            (ALERTS.name, "rule_good"),  # a firing's dead letter is keyed by its rule, as on the topic
        }
        and len(letters) == 4
    )
    assert "recursion limit" in by_key[(ALERT_RULES.name, "rule_deep")].reason
    assert by_key[(ALERT_RULES.name, "rule_deep")].payload == deep
    assert all(d.reason.startswith("quarantined at start: ") and d.consumer == "alerts" for d in letters)
    quarantined = [r.getMessage() for r in caplog.records if r.getMessage().startswith("quarantined")]
    assert sorted(m.split(":")[0] for m in quarantined) == [
        "quarantined firing f-json",
        "quarantined firing f-symbol",
        "quarantined rule rule_deep",
        "quarantined rule rule_junk",
    ]
    _, _, again = await start_embedded(store)  # the next start: the same dead letters, recognisable by id
    assert sorted(d.event_id for d in again) == sorted(d.event_id for d in letters)


@pytest.mark.kafka
async def test_an_unreadable_rule_on_the_topic_does_not_stop_the_service(kafka_bootstrap: str) -> None:
    run = uuid.uuid4().hex[:10]
    ids = {name: f"rule_{run}_{name}" for name in ("good", "deep", "junk", "gone")}
    publisher = KafkaBus(kafka_bootstrap, group_prefix=f"quarantine-{run}")
    await publisher.start()
    try:
        await publisher.publish(ALERT_RULES, [good_rule(ids["good"])])
        await publisher.publish_raw(
            ALERT_RULES,
            [
                RawMessage(deep_rule_text(ids["deep"]).encode(), key=ids["deep"]),
                RawMessage(b"\xff not json", key=ids["junk"]),
                RawMessage(b"{", key=ids["gone"]),
            ],
        )
        await publisher.publish_tombstone(ALERT_RULES, ids["gone"])  # its owner deleted it: nothing to quarantine
        await publisher.publish_raw(ALERTS, [RawMessage(b'{"firing_id": 1}', key=ids["good"])])
    finally:
        await publisher.stop()

    bus = KafkaBus(kafka_bootstrap, group_prefix=f"quarantine-{run}")
    ctx = Context(settings=Settings(), bus=bus)
    service = AlertsService()
    service.register(ctx)
    await bus.start()
    try:
        await service.start(ctx)
        assert service.ready.is_set() and ids["good"] in service.book.rules
        assert ctx.status["quarantined_rules"] >= 2 and ctx.status["quarantined_firings"] >= 1  # others' too
        letters = [
            (d.topic, d.key)
            for d in await bus.read_log(DEAD_LETTER)
            if isinstance(d, DeadLetterEvent) and d.consumer == "alerts" and (d.key or "").startswith(f"rule_{run}")
        ]
    finally:
        await service.stop()
        await bus.stop()
    assert sorted(letters) == sorted(
        [(ALERT_RULES.name, ids["deep"]), (ALERT_RULES.name, ids["junk"]), (ALERTS.name, ids["good"])]
    )
