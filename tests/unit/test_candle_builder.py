"""Candles from ticks: duplicates never double a volume; out-of-order input gives the same candles."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from tokenpulse_ingest.candles import CandleBuilder
from tokenpulse_shared.events import CandleEvent, Interval, TickEvent

T0 = datetime(2024, 12, 5, tzinfo=UTC)


def make_ticks(n: int, seed: int, spacing_s: float = 7.0) -> list[TickEvent]:
    rng = random.Random(seed)
    price = 100.0
    out = []
    for i in range(n):
        price *= 1 + rng.uniform(-0.01, 0.01)
        out.append(
            TickEvent(
                symbol="BTC",
                source="test",
                ts=T0 + timedelta(seconds=i * spacing_s),
                price=price,
                size=rng.uniform(0.1, 2.0),
                trade_id=str(i),
            )
        )
    return out


def reference(ticks: list[TickEvent], interval: Interval) -> dict[int, tuple[float, ...]]:
    """Independent OHLCV: group unique trades by bucket, order by time."""
    unique = {t.trade_id: t for t in ticks}
    buckets: dict[int, list[TickEvent]] = defaultdict(list)
    for t in unique.values():
        buckets[interval.bucket_ms(int(t.ts.timestamp() * 1000))].append(t)
    out = {}
    for b, ts in buckets.items():
        ts.sort(key=lambda t: (t.ts, int(t.trade_id or 0)))
        out[b] = (
            ts[0].price,
            max(t.price for t in ts),
            min(t.price for t in ts),
            ts[-1].price,
            sum(t.size for t in ts),
            len(ts),
        )
    return out


def final(candles: list[CandleEvent], interval: Interval) -> dict[int, tuple[float, ...]]:
    """What the store keeps: the highest version per candle."""
    best: dict[int, CandleEvent] = {}
    for c in candles:
        if c.interval is not interval:
            continue
        k = int(c.ts.timestamp() * 1000)
        if k not in best or c.version > best[k].version:
            best[k] = c
    return {k: (c.open, c.high, c.low, c.close, c.volume, c.trades) for k, c in best.items()}


def run(builder: CandleBuilder, ticks: list[TickEvent], batch: int = 10) -> tuple[list[CandleEvent], list[TickEvent]]:
    candles, late = [], []
    wall = T0.timestamp()
    for i in range(0, len(ticks), batch):
        r = builder.add(ticks[i : i + batch], wall=wall)
        candles += r.candles
        late += r.late
    # the feed goes quiet: wall time moves far past the last bucket
    candles += builder.tick_clock(wall=wall + 10 * 86400)
    return candles, late


def approx_equal(a: dict[int, tuple[float, ...]], b: dict[int, tuple[float, ...]]) -> bool:
    if a.keys() != b.keys():
        return False
    return all(all(abs(x - y) <= 1e-9 * max(1.0, abs(y)) for x, y in zip(a[k], b[k], strict=True)) for k in a)


def test_in_order_ticks_give_the_reference_candles_for_every_interval() -> None:
    ticks = make_ticks(3000, seed=1)
    candles, late = run(CandleBuilder(idle_close_s=0), ticks)
    assert late == []
    for interval in Interval:
        assert approx_equal(final(candles, interval), reference(ticks, interval)), interval


def test_duplicate_ticks_never_double_the_volume() -> None:
    ticks = make_ticks(500, seed=2)
    doubled = [t for t in ticks for _ in range(2)]
    candles, _ = run(CandleBuilder(idle_close_s=0), doubled)
    assert approx_equal(final(candles, Interval.M1), reference(ticks, Interval.M1))
    total = sum(c[4] for c in final(candles, Interval.D1).values())
    assert abs(total - sum(t.size for t in ticks)) < 1e-9


def test_a_late_tick_within_retention_corrects_the_closed_candle_with_a_higher_version() -> None:
    ticks = make_ticks(40, seed=3)  # 40 ticks, 7 s apart: 5 one-minute buckets
    held_back = ticks[3]  # belongs to the first minute
    # it arrives when event time is at 98 s: the minute closed at 62 s, retention runs to 122 s
    stream = ticks[:3] + ticks[4:15] + [held_back] + ticks[15:]
    candles, late = run(CandleBuilder(idle_close_s=0), stream, batch=1)
    assert late == []
    first_minute = [c for c in candles if c.interval is Interval.M1 and c.ts == T0]
    assert len(first_minute) == 2 and first_minute[1].version > first_minute[0].version
    assert approx_equal(final(candles, Interval.M1), reference(ticks, Interval.M1))


def test_a_tick_later_than_retention_is_reported_late_not_silently_merged() -> None:
    ticks = make_ticks(200, seed=4)  # ~23 minutes
    very_late = ticks[0]
    stream = [*ticks[1:], very_late]
    builder = CandleBuilder(idle_close_s=1e9)
    _candles, late = run(builder, stream)
    assert late == [very_late]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), displacement=st.integers(0, 8), dup_rate=st.floats(0, 0.5))
def test_any_bounded_shuffle_with_duplicates_gives_the_same_candles(
    seed: int, displacement: int, dup_rate: float
) -> None:
    ticks = make_ticks(400, seed=seed)
    rng = random.Random(seed)
    keyed = sorted(((i + rng.uniform(0, displacement), t) for i, t in enumerate(ticks)), key=lambda p: p[0])
    stream = []
    for _, t in keyed:
        stream.append(t)
        if rng.random() < dup_rate:
            stream.append(t)
    candles, late = run(CandleBuilder(idle_close_s=0), stream, batch=5)
    assert late == []
    for interval in (Interval.M1, Interval.M5, Interval.H1):
        assert approx_equal(final(candles, interval), reference(ticks, interval))


def test_candle_event_ids_are_derived_from_the_candle_so_a_rebuild_gives_the_same_ids() -> None:
    ticks = make_ticks(40, seed=3)
    held_back = ticks[3]
    stream = ticks[:3] + ticks[4:15] + [held_back] + ticks[15:]
    candles, _ = run(CandleBuilder(idle_close_s=0), stream, batch=1)
    again, _ = run(CandleBuilder(idle_close_s=0), stream, batch=1)  # another process, the same ticks
    ids = [c.event_id for c in candles]
    assert ids == [c.event_id for c in again]
    assert len(set(ids)) == len(ids)  # the correction of the first minute is a new event, with its new version
    first = [c for c in candles if c.interval is Interval.M1 and c.ts == T0]
    assert first[1].event_id.startswith(f"candle-BTC-1m-{int(T0.timestamp() * 1000)}-{first[1].version}-")
    # the same bucket built without one of its trades (a rebuild that missed it): other content, other ids
    partial, _ = run(CandleBuilder(idle_close_s=0), stream[1:], batch=1)
    assert not {c.event_id for c in partial if c.ts == T0} & set(ids)
