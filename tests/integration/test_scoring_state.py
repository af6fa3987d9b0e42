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
    settings = Settings(runtime={"symbols": ["BTC", "ETH"]}, ingest={"live_feed": "off"})
    (btc,) = plan(settings.runtime.bundle_dir, ["BTC"], [Interval.D1])
    (eth,) = plan(settings.runtime.bundle_dir, ["ETH"], [Interval.D1])
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
    ((symbol, interval, bars),) = plan(settings.runtime.bundle_dir, ["BTC"], [Interval.D1])
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


def _feed(service: ScoringService, bars, changes=None, skip=None):  # type: ignore[no-untyped-def]
    """Feed bars in order (optionally with corrected values, or one left out); returns updates by ts."""
    out = {}
    for i, b in enumerate(bars):
        if i == skip:
            continue
        close = (changes or {}).get(i, b.close)
        entry = (b.ts_ms, b.open, max(b.high, close), min(b.low, close), close, b.volume, 0)
        for e, u in service.apply_all("BTC", Interval.D1, entry):
            out[e[0]] = u
    return out


def test_a_late_correction_of_an_older_candle_recomputes_everything_after_it() -> None:
    ((_, _, bars),) = plan(Settings().runtime.bundle_dir, ["BTC"], [Interval.D1])
    bars = bars[:1200]
    live, reference = ScoringService(), ScoringService()
    _feed(live, bars)
    expected = _feed(reference, bars, changes={1000: bars[1000].close * 1.3})
    b = bars[1000]
    fixed = b.close * 1.3
    recomputed = dict(
        (e[0], u)
        for e, u in live.apply_all("BTC", Interval.D1, (b.ts_ms, b.open, max(b.high, fixed), b.low, fixed, b.volume, 1))
    )
    assert sorted(recomputed) == [x.ts_ms for x in bars[1000:]]
    assert all(recomputed[t] == expected[t] for t in recomputed)
    # and the state goes on exactly as if the corrected candle had come in order
    nxt = (bars[1199].ts_ms + 86_400_000, 1.0, 2.0, 0.5, 1.5, 10.0, 0)
    assert live.apply_all("BTC", Interval.D1, nxt) == reference.apply_all("BTC", Interval.D1, nxt)


def test_a_missing_candle_arriving_late_is_inserted_and_recomputed() -> None:
    ((_, _, bars),) = plan(Settings().runtime.bundle_dir, ["BTC"], [Interval.D1])
    bars = bars[:1200]
    live, reference = ScoringService(), ScoringService()
    _feed(live, bars, skip=1100)
    expected = _feed(reference, bars)
    b = bars[1100]
    out = live.apply_all("BTC", Interval.D1, (b.ts_ms, b.open, b.high, b.low, b.close, b.volume, 0))
    assert [e[0] for e, _ in out] == [x.ts_ms for x in bars[1100:]]
    assert all(u == expected[e[0]] for e, u in out)


def test_a_correction_older_than_the_kept_history_is_counted_not_applied() -> None:
    ((_, _, bars),) = plan(Settings().runtime.bundle_dir, ["BTC"], [Interval.D1])
    live = ScoringService()
    _feed(live, bars)  # 5,600+ candles: the first ones are out of the kept history
    b = bars[5]
    assert live.apply_all("BTC", Interval.D1, (b.ts_ms, b.open, b.high, b.low, b.close, b.volume, 1)) == []
    assert live.stale_corrections == 1
