"""The ingest service's reference price on the in-process bus: a drifting source is left out, a silent
feed turns the price stale on the service's own timer (no tick needed), a fresh tick clears it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from tokenpulse_ingest.service import IngestService
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.events import PriceEvent, TickEvent
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.topics import PRICES, TICKS

from testkit.wiring import collected


async def wait_for(got: list[PriceEvent], pred, timeout: float = 30.0) -> PriceEvent:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        hit = next((e for e in got if pred(e)), None)
        if hit is not None:
            return hit
        await asyncio.sleep(0.05)
    raise AssertionError(f"no matching price event in {timeout}s; got {got}")


async def test_outlier_out_stale_on_timer_then_cleared() -> None:
    settings = Settings(runtime={"symbols": ["BTC"]}, ingest={"live_feed": "off", "price_stale_after_s": 1.5})
    bus = InMemoryBus()
    ctx = Context(settings=settings, bus=bus, embedded=True)
    ingest = IngestService()
    ingest.register(ctx)
    got: list[PriceEvent] = collected(bus, PRICES, "test")
    await bus.start()
    await ingest.start(ctx)
    try:
        now = datetime.now(UTC)
        quotes = {"binance": (100_000.0, "USDT"), "coinbase": (100_040.0, "USD"), "kraken": (99_980.0, "USD")}
        quotes["bitstamp"] = (105_000.0, "USD")  # 5 % away from the others
        await bus.publish(
            TICKS,
            [
                TickEvent(symbol="BTC", source=s, ts=now, price=p, size=1.0, quote=q, trade_id=f"{s}-1")
                for s, (p, q) in quotes.items()
            ],
        )
        first = await wait_for(got, lambda e: not e.stale)
        assert first.sources == ["binance", "coinbase", "kraken"]
        assert 99_980.0 <= first.price <= 100_040.0
        stale = await wait_for(got, lambda e: e.stale)  # nothing else arrives: the clock marks it
        assert stale.sources == [] and stale.price == first.price and stale.prev_price == first.price
        assert ingest.reconciler.is_stale("BTC")
        await bus.publish(
            TICKS,
            [TickEvent(symbol="BTC", source="kraken", ts=datetime.now(UTC), price=100_010.0, trade_id="k-2")],
        )
        back = await wait_for(got, lambda e: not e.stale and e.price == 100_010.0)
        assert back.sources == ["kraken"] and back.prev_price == first.price
        assert got.index(back) > got.index(stale)
    finally:
        await ingest.stop()
        await bus.stop()
