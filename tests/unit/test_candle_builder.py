"""Candles from ticks: duplicates never double a volume; out-of-order input gives the same candles."""

from __future__ import annotations

import random
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from tokenpulse_ingest.candles import CandleBuilder
from tokenpulse_shared.batches import TickBatch
from tokenpulse_shared.events import CandleEvent, Interval, TickEvent

from testkit.ticks import ohlcv

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
        out[b] = (*ohlcv(ts), len(ts))
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


def priced(source: str, at_s: float, price: float, trade_id: str) -> TickEvent:
    return TickEvent(
        symbol="BTC", source=source, ts=T0 + timedelta(seconds=at_s), price=price, size=1.0, trade_id=trade_id
    )


def test_live_trades_supersede_an_open_synthetic_candle_never_mixed_in_it() -> None:
    # `auto` back from its synthetic fallback at 30 s into the first minute
    synthetic = [priced("synthetic", s, 50.0 + s / 100, f"syn-{s}") for s in range(0, 30, 2)]
    live = [priced("binance", s, 100.0 + s / 100, str(s)) for s in range(30, 140, 5)]
    stray = priced("synthetic", 31, 50.0, "syn-late")  # a synthetic batch still in flight after the switch
    builder = CandleBuilder(intervals=[Interval.M1, Interval.H1], idle_close_s=1e9)
    result = builder.add(synthetic)
    assert result.candles == []  # the synthetic minute is still open
    candles = builder.add(live[:1]).candles + builder.add([stray]).candles + builder.add(live[1:]).candles
    candles += builder.flush_all()
    assert candles, "the live candles are published"
    for c in candles:  # no candle holds a synthetic price: the open synthetic part was discarded
        assert c.low >= 100.0, c
    first = [c for c in candles if c.interval is Interval.M1 and c.ts == T0]
    assert first and first[-1].trades == len([t for t in live if t.ts < T0 + timedelta(minutes=1)])
    hour = [c for c in candles if c.interval is Interval.H1]
    assert hour[-1].trades == len(live) and hour[-1].open == live[0].price


def test_an_emitted_synthetic_candle_stays_synthetic_and_live_ones_start_afresh() -> None:
    synthetic = [priced("synthetic", s, 50.0, f"syn-{s}") for s in range(0, 60, 2)]
    builder = CandleBuilder(intervals=[Interval.M1, Interval.H1], idle_close_s=1e9, lateness_ms=0)
    closed = builder.add([*synthetic, priced("synthetic", 61, 50.0, "syn-61")]).candles
    assert [c.trades for c in closed if c.interval is Interval.M1] == [30]  # minute one final, synthetic
    # a live trade stamped inside the emitted synthetic minute is not mixed into it (no correction) ...
    result = builder.add([priced("binance", 59, 100.0, "1"), priced("binance", 62, 100.0, "2")])
    assert all(c.low >= 100.0 or c.high <= 50.0 for c in result.candles)
    assert not [c for c in result.candles if c.interval is Interval.M1 and c.ts == T0]
    # ... and the hour, still open, restarts from the live trades alone
    hour = [c for c in builder.flush_all() if c.interval is Interval.H1]
    assert hour[0].trades == 2 and hour[0].low == 100.0


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


def test_the_rows_of_batches_build_what_the_events_build() -> None:
    """Columns in (ticks.v2), events in (ticks.v1): the same candles, the same late trades, across many tokens."""
    ticks = [t.model_copy(update={"symbol": f"T{i % 7}"}) for i, t in enumerate(make_ticks(700, seed=5, spacing_s=2))]
    ticks.append(ticks[10].model_copy(update={"trade_id": "late", "ts": T0}))  # far behind its token's watermark
    by_events, by_rows = CandleBuilder(), CandleBuilder()
    wall = (T0 + timedelta(days=1)).timestamp()
    for i in range(0, len(ticks), 25):
        chunk = ticks[i : i + 25]
        a = by_events.add(chunk, wall=wall)
        b = by_rows.add_batch(TickBatch.from_events(chunk), wall=wall)
        assert [c.model_dump(exclude={"produced_at"}) for c in a.candles] == [
            c.model_dump(exclude={"produced_at"}) for c in b.candles
        ]
        assert [chunk[j] for j in b.late_rows] == a.late
    assert by_events.open_buckets() != [] and [c.event_id for c in by_events.open_buckets()] == [
        c.event_id for c in by_rows.open_buckets()
    ]
    assert [t.trade_id for t in a.late] == ["late"]  # the last chunk holds the late trade


def test_the_trades_remembered_for_duplicates_span_minutes_not_the_day() -> None:
    """A day's candle is open all day: the trade ids the builder keeps to tell a re-sent trade must not grow
    with it. A trade older than the finest bucket's retention is late anyway, so only those few minutes are kept;
    a re-sent trade inside them is still counted once in every interval."""
    ticks = make_ticks(2000, 3, spacing_s=3.0)  # 100 minutes, 20 trades a minute
    builder = CandleBuilder()
    out = builder.add(ticks).candles
    kept = sum(len(keys) for window in builder._counted.values() for keys in window.values())
    assert 0 < kept <= 4 * 20  # the last few minutes' trades, not 2,000
    out += builder.add(ticks[-30:]).candles  # re-sent: nothing changes
    out += builder.tick_clock(wall=time.time() + 3600)
    for interval in Interval:
        assert final(out, interval) == reference(ticks, interval)
