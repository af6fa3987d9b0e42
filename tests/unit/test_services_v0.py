"""Alerts v0: price crossings with cooldown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tokenpulse_alerts.service import AlertsService
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.events import AlertCondition, AlertFiredEvent, AlertRuleEvent, Event, PriceEvent
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.topics import ALERTS

T0 = datetime(2024, 1, 1, tzinfo=UTC)


async def test_alert_fires_once_on_crossing_and_respects_cooldown() -> None:
    bus = InMemoryBus()
    fired: list[AlertFiredEvent] = []

    async def sink(events: list[Event]) -> None:
        fired.extend(events)  # type: ignore[arg-type]

    service = AlertsService()
    service.register(Context(settings=Settings(), bus=bus))
    bus.subscribe(ALERTS, "test", sink)
    await bus.start()
    rule = AlertRuleEvent(
        rule_id="r1",
        owner="k1",
        symbol="BTC",
        condition=AlertCondition(kind="price_above", value=100.0),
        cooldown_s=600,
    )
    await service.on_rules([rule])
    prices = [99, 101, 102, 99, 101, 98, 103]  # crossings at 1, 4 (in cooldown), 6 (after cooldown)
    minutes = [0, 1, 2, 3, 4, 5, 20]
    await service.on_prices(
        [PriceEvent(symbol="BTC", ts=T0 + timedelta(minutes=m), price=p) for p, m in zip(prices, minutes, strict=True)]
    )
    await bus.drain()
    await bus.stop()
    assert [(f.price, f.ts) for f in fired] == [(101, T0 + timedelta(minutes=1)), (103, T0 + timedelta(minutes=20))]
    await service.on_rules([rule.model_copy(update={"deleted": True})])
    assert service.rules == {}
