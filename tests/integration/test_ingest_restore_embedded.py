"""Embedded mode: a restarted ingest rebuilds its open candles from what the store holds.

The in-process bus keeps no log, so the ticks (stored by the writer) and the tick-built candles in the
real chDB store stand in for the ticks topic and the candles topic. A first pipeline (ingest + the
gateway's writer) takes trades of the last minutes and stops; a second one on the same store starts
with the candles the first had in memory, published or not, and counts no re-sent trade twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tokenpulse_gateway.service import GatewayService
from tokenpulse_ingest.candles import CandleBuilder
from tokenpulse_ingest.service import IngestService
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.events import TickEvent
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.store import Store
from tokenpulse_shared.topics import TICKS

from testkit.wiring import embedded


def memory(builder: CandleBuilder) -> list[tuple[object, ...]]:
    return [
        (c.symbol, c.interval, c.ts, c.open, c.high, c.low, c.close, c.volume, c.trades, c.closed, c.version)
        for c in builder.open_buckets()
    ]


async def test_embedded_restart_restores_the_open_candles_from_the_store(store: Store) -> None:
    settings = Settings(runtime={"symbols": ["BTC", "ETH"], "backfill_on_start": False}, ingest={"live_feed": "off"})
    now = datetime.now(UTC)
    ticks = [
        TickEvent(
            symbol=symbol,
            source="test",
            ts=now - timedelta(seconds=600 - 3 * i),
            price=base + (i % 7),
            size=0.5 + (i % 3),
            trade_id=f"{symbol}-{i}",
        )
        for i in range(200)
        for symbol, base in (("BTC", 100.0), ("ETH", 10.0))
    ]

    first, writer = IngestService(), GatewayService()
    bus, ctx = embedded(settings, store, first, writer)
    await bus.start()
    await first.start(ctx)
    assert first.restored is not None and first.restored.ticks == 0  # a fresh store: nothing to restore
    for i in range(0, len(ticks), 50):
        await bus.publish(TICKS, ticks[i : i + 50])
    await bus.drain()
    await first.stop()  # its clock stops; what it published reaches the store
    await bus.drain()
    before = memory(first.builder)
    await bus.stop()
    assert any(not row[9] for row in before) and any(row[9] for row in before)  # open and closed ones

    bus2 = InMemoryBus()
    ctx2 = Context(settings=settings, bus=bus2, store=store, embedded=True)
    second = IngestService()
    second.register(ctx2)
    await bus2.start()
    await second.start(ctx2)
    try:
        assert second.restored is not None and second.restored.ticks == len(ticks)
        assert memory(second.builder) == before
        resent = ticks[-1].model_copy(update={"event_id": "resent-after-restart"})
        assert second.builder.add([resent]).duplicates == 1
    finally:
        await second.stop()
        await bus2.stop()
