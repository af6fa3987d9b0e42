"""Scoring on the real engine: a restarted instance rebuilds exactly the same state; corrections."""

from __future__ import annotations

from tokenpulse_gateway.writer import StoreWriter
from tokenpulse_ingest.backfill import plan, publish_history
from tokenpulse_ingest.bundle import bar_to_event
from tokenpulse_scoring.service import ScoringService
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.events import Interval
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.store import Store


async def test_a_restarted_scoring_instance_continues_with_identical_values(store: Store) -> None:
    settings = Settings(symbols=["BTC", "ETH"], live_feed="off")
    (btc,) = plan(settings.bundle_dir, ["BTC"], [Interval.D1])
    (eth,) = plan(settings.bundle_dir, ["ETH"], [Interval.D1])
    symbol, interval, bars = btc
    head, tail = bars[:-10], bars[-10:]

    bus = InMemoryBus()
    ctx = Context(settings=settings, bus=bus, store=store, embedded=True)
    StoreWriter(store).register(ctx)
    first = ScoringService()
    first.register(ctx)
    await bus.start()
    await first.start(ctx)
    await publish_history(bus, [(symbol, interval, head), eth])
    await bus.drain()
    await bus.stop()

    restarted = ScoringService()
    restarted.ctx = ctx
    await restarted.start(ctx)  # warm-up from the stored candles
    for key in [("BTC", Interval.D1), ("ETH", Interval.D1)]:
        assert restarted.series[key].state.snapshot() == first.series[key].state.snapshot()
        assert restarted.series[key].last_ms == first.series[key].last_ms
    for bar in tail:
        candle = bar_to_event(symbol, interval, bar)
        assert restarted.apply(candle) == first.apply(candle)


async def test_a_correction_of_the_latest_candle_recomputes_it() -> None:
    settings = Settings()
    ((symbol, interval, bars),) = plan(settings.bundle_dir, ["BTC"], [Interval.D1])
    live, reference = ScoringService(), ScoringService()
    for bar in bars[:300]:
        live.apply(bar_to_event(symbol, interval, bar))
        reference.apply(bar_to_event(symbol, interval, bar))
    wrong = bar_to_event(symbol, interval, bars[300]).model_copy(
        update={"close": bars[300].close * 1.5, "high": bars[300].high * 1.5}
    )
    right = bar_to_event(symbol, interval, bars[300]).model_copy(update={"version": 1})
    assert live.apply(wrong) is not None
    corrected = live.apply(right)
    assert corrected == reference.apply(bar_to_event(symbol, interval, bars[300]))
    # the same candle again, or an older one, changes nothing
    assert live.apply(right) is None
    assert live.apply(bar_to_event(symbol, interval, bars[10])) is None
