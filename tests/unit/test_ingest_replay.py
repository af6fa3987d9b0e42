"""The rebuild's streaming parts: the merge of the two ticks topics, counting row batches as the events they
stand for, and keeping only the published candles the rebuilt state needs."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import tokenpulse_ingest.replay as replay_module
from tokenpulse_ingest.candles import CandleBuilder
from tokenpulse_ingest.prices import PriceReconciler
from tokenpulse_ingest.replay import PublishedCandles, by_time, replay, rows_of
from tokenpulse_shared.batches import TickBatch
from tokenpulse_shared.events import CandleEvent, Event, TickEvent

from testkit.ticks import random_walk, with_resends

T0 = datetime(2024, 12, 5, tzinfo=UTC)


def feed(n: int, seed: int) -> list[TickEvent]:
    rng = random.Random(seed)
    out = random_walk(rng, {"BTC": 100.0, "ETH": 10.0}, n, start=T0, step_s=2, move=0.01, sizes=(0.1, 2.0), source="t")
    return with_resends(rng, out, 15, 200, lambda j: f"resent-{j:08d}")


def made_at(events: list[TickEvent], start: datetime, step_ms: int) -> list[TickEvent]:
    return [
        e.model_copy(update={"produced_at": start + timedelta(milliseconds=i * step_ms)}) for i, e in enumerate(events)
    ]


async def chunks(events: list[Event], size: int) -> AsyncIterator[list[Event]]:
    for at in range(0, len(events), size):
        yield events[at : at + size]


def merged(streams: list[list[Event]], size: int) -> list[list[Event]]:
    async def collect() -> list[list[Event]]:
        return [chunk async for chunk in by_time([chunks(s, size) for s in streams])]

    return asyncio.run(collect())


def test_the_two_topics_merge_by_when_each_message_was_made_each_keeping_its_own_order() -> None:
    ticks = feed(300, 1)
    v1 = made_at(ticks[::2], T0, 10)  # every 10 ms
    v2 = made_at(ticks[1::2], T0 + timedelta(milliseconds=5), 10)
    v2[3], v2[4] = v2[4], v2[3]  # a topic's own order is kept even where its times are not
    out = [e for chunk in merged([v1, v2], 7) for e in chunk]
    assert sorted(e.event_id for e in out) == sorted(e.event_id for e in v1 + v2)
    assert [e for e in out if e in v1] == v1 and [e for e in out if e in v2] == v2
    assert out[:4] == [v1[0], v2[0], v1[1], v2[1]]


def test_the_merge_hands_on_chunks_of_rows_not_of_messages(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(replay_module, "MERGE_CHUNK", 100)
    ticks = made_at(feed(300, 2), T0, 1)
    batches = [TickBatch.from_events(ticks[at : at + 40]) for at in range(0, len(ticks), 40)]
    out = merged([list(batches)], 3)
    assert [b for chunk in out for b in chunk] == batches
    assert all(sum(len(b) for b in chunk) < 100 + 40 for chunk in out) and len(out) > 1  # type: ignore[arg-type]


def state(builder: CandleBuilder, reconciler: PriceReconciler) -> tuple[object, ...]:
    buckets = [(c.symbol, c.interval, c.ts, c.open, c.high, c.low, c.close, c.volume, c.trades, c.closed, c.version)
               for c in builder.open_buckets()]  # fmt: skip
    return buckets, {s: (r.price, r.used) for s, r in reconciler.last.items()}


def test_row_batches_count_as_the_events_they_carry_and_only_the_symbols_kept() -> None:
    ticks = feed(400, 3)
    wall = T0.timestamp() + 2 * 400
    as_events = CandleBuilder(), PriceReconciler()
    as_rows = CandleBuilder(), PriceReconciler()
    eth_only = CandleBuilder(), PriceReconciler()
    assert replay(*as_events, ticks, lambda s: True, wall) == len(ticks)
    batches = [TickBatch.from_events(ticks[at : at + 97]) for at in range(0, len(ticks), 97)]
    assert replay(*as_rows, batches, lambda s: True, wall) == len(ticks)
    assert state(*as_rows) == state(*as_events)
    kept = replay(*eth_only, batches, lambda s: s == "ETH", wall)
    assert kept == sum(t.symbol == "ETH" for t in ticks) and eth_only[0].symbols() == {"ETH"}


A_CANDLE = CandleEvent(symbol="BTC", interval="1m", ts=T0, open=1.0, high=2.0, low=0.5, close=1.5, volume=3.0, trades=1)


def candle(symbol: str, minute: int, version: int, made: datetime, source: str = "ticks") -> CandleEvent:
    """A closed one-minute candle of one trade: its minute, its version and when it was made."""
    return A_CANDLE.model_copy(
        update={
            "event_id": f"candle-{symbol}-{minute}-{version}-{source}-{made:%H%M%S}",
            "symbol": symbol,
            "ts": T0 + timedelta(minutes=minute),
            "source": source,
            "version": 1000 + version,
            "produced_at": made,
        }
    )


def test_published_candles_keep_the_latest_the_state_needs_and_find_rows_without_their_copy() -> None:
    builder = CandleBuilder()
    builder.add([t for t in feed(200, 4) if t.symbol == "BTC"], wall=T0.timestamp() + 400)  # ~6 minutes
    old, recent = candle("BTC", 0, 1, T0), candle("BTC", 5, 1, T0 + timedelta(minutes=10))
    newer = candle("BTC", 5, 2, T0 + timedelta(minutes=10, seconds=1))
    copied, uncopied = candle("BTC", 4, 1, T0 + timedelta(minutes=10)), candle("BTC", 3, 1, T0 + timedelta(minutes=10))
    before = candle("BTC", 2, 1, T0 + timedelta(minutes=5))  # no copy, but from before v1 copies were switched on
    published = PublishedCandles(builder)
    rows = [old, before, recent, newer, copied, uncopied, candle("BTC", 5, 9, T0, source="binance")]
    published.add_messages(rows, False)
    published.add_messages([copied, old], True)
    kept = {(c.ts, c.version) for c in published.latest.values()}
    assert (newer.ts, newer.version) in kept and (recent.ts, recent.version) not in kept
    assert (old.ts, old.version) not in kept  # its minute is past retention: nothing can change it
    assert [c.event_id for c in published.without_copy()] == [recent.event_id, newer.event_id, uncopied.event_id]


def test_rows_of_keeps_the_symbols_asked_for_and_says_where_each_row_was() -> None:
    ticks = feed(20, 5)
    batches = [TickBatch.from_events(ticks[:7]), TickBatch.from_events(ticks[7:])]
    columns, keys, rows = rows_of(batches, lambda symbol: symbol == "ETH")
    assert rows == [i for i, t in enumerate(ticks) if t.symbol == "ETH"]
    assert columns[0] == ["ETH"] * len(rows) and keys == [t.dedup_key() for t in ticks if t.symbol == "ETH"]
    assert rows_of(batches)[2] == list(range(len(ticks)))
