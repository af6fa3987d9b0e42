"""Scoring v0 (Wilder RSI) and alerts v0 (price crossings with cooldown)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from tokenpulse_alerts.service import AlertsService
from tokenpulse_scoring.service import WilderRSI
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.events import AlertCondition, AlertFiredEvent, AlertRuleEvent, Event, PriceEvent
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.topics import ALERTS

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def reference_rsi(closes: list[float], n: int = 14) -> list[float | None]:
    """Textbook Wilder RSI computed over the whole list at once."""
    out: list[float | None] = [None] * len(closes)
    changes = [b - a for a, b in itertools.pairwise(closes)]
    gains = [max(c, 0) for c in changes]
    losses = [max(-c, 0) for c in changes]
    ag, al = sum(gains[:n]) / n, sum(losses[:n]) / n
    out[n] = 100 - 100 / (1 + ag / al)
    for i in range(n, len(changes)):
        ag = (ag * (n - 1) + gains[i]) / n
        al = (al * (n - 1) + losses[i]) / n
        out[i + 1] = 100 - 100 / (1 + ag / al)
    return out


def test_streaming_rsi_matches_the_batch_definition() -> None:
    closes = [
        44.34,
        44.09,
        44.15,
        43.61,
        44.33,
        44.83,
        45.10,
        45.42,
        45.84,
        46.08,
        45.89,
        46.03,
        45.61,
        46.28,
        46.28,
        46.00,
        46.03,
        46.41,
        46.22,
        45.64,
        46.21,
    ]
    rsi = WilderRSI()
    streamed = [rsi.update(c) for c in closes]
    expected = reference_rsi(closes)
    assert streamed[:14] == [None] * 14
    for got, want in zip(streamed[14:], expected[14:], strict=True):
        assert got is not None and want is not None and abs(got - want) < 1e-9
    assert abs(streamed[14] - 70.46) < 0.01  # type: ignore[operator]  # Wilder's worked example


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
