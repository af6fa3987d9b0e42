"""Scoring on the real engine: a restarted instance rebuilds exactly the same state; corrections."""

from __future__ import annotations

from tokenpulse_gateway.writer import StoreWriter
from tokenpulse_ingest.backfill import plan, publish_history
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
        args = (symbol, interval, bar.ts_ms, bar.open, bar.high, bar.low, bar.close, bar.volume, 0)
        assert restarted.apply(*args) == first.apply(*args)


async def test_a_correction_of_the_latest_candle_recomputes_it() -> None:
    settings = Settings()
    ((symbol, interval, bars),) = plan(settings.bundle_dir, ["BTC"], [Interval.D1])
    live, reference = ScoringService(), ScoringService()

    def args(bar, version=0, scale=1.0):  # type: ignore[no-untyped-def]
        return (
            symbol,
            interval,
            bar.ts_ms,
            bar.open,
            bar.high * scale,
            bar.low,
            bar.close * scale,
            bar.volume,
            version,
        )

    for bar in bars[:400]:
        live.apply(*args(bar))
        reference.apply(*args(bar))
    assert live.apply(*args(bars[400], scale=1.5)) is not None  # a bad print ...
    corrected = live.apply(*args(bars[400], version=1))  # ... corrected with a higher version
    assert corrected == reference.apply(*args(bars[400]))
    assert corrected is not None and corrected.grade is not None and corrected.grade.trader_grade is not None
    # the same candle again, or an older one, changes nothing
    assert live.apply(*args(bars[400], version=1)) is None
    assert live.apply(*args(bars[10])) is None
