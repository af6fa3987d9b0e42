"""Restoring the candle builder after a restart: the same candles as a run without the restart.

A restarted ingest rebuilds its open candles (``CandleBuilder.restore``) from the ticks the previous
instance had counted (on Kafka: the ticks topic up to the committed offsets) and the candles it had
already published. The reference is one builder that sees every tick without a restart.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import pytest
from tokenpulse_ingest.candles import CandleBuilder
from tokenpulse_shared.events import CandleEvent, Interval, TickEvent

from testkit.ticks import random_walk, with_resends

T0 = datetime(2024, 12, 5, tzinfo=UTC)
BATCH = 40


def feed_ticks(n: int, seed: int) -> list[TickEvent]:
    """Two tokens, one trade every 7 s each (~6 h), and about one in 15 trades sent again later (same trade id,
    new event id: an exchange's re-send), some of them across any cut."""
    rng = random.Random(seed)
    out = random_walk(
        rng, {"BTC": 100.0, "ETH": 10.0}, n, start=T0, step_s=7, move=0.01, sizes=(0.1, 2.0), source="test"
    )
    return with_resends(rng, out, 15, 300, lambda j: f"resent-{j:08d}")


def wall_of(batch: list[TickEvent]) -> float:
    """Wall time = the newest trade's time plus a moment: a live feed."""
    return max(t.ts.timestamp() for t in batch) + 0.5


def run(
    builder: CandleBuilder,
    ticks: list[TickEvent],
    out: list[CandleEvent],
    *,
    start: int = 0,
    stop: int | None = None,
    pause_every: int = 0,
) -> None:
    """Feed ``ticks[start:stop]`` in batches, as the consumer does; after every ``pause_every``-th batch of the
    whole feed it goes quiet long enough for the idle clock to close what has ended."""
    stop = len(ticks) if stop is None else stop
    for i in range(start, stop, BATCH):
        batch = ticks[i : min(i + BATCH, stop)]
        out += builder.add(batch, wall=wall_of(batch)).candles
        if pause_every and (i // BATCH) % pause_every == pause_every - 1:
            out += builder.tick_clock(wall=wall_of(batch) + builder.idle_close_s + 1)


def finish(builder: CandleBuilder, out: list[CandleEvent]) -> None:
    out += builder.tick_clock(wall=(T0 + timedelta(days=5)).timestamp())


def final(candles: list[CandleEvent]) -> dict[tuple[str, Interval, datetime], tuple[float | int, ...]]:
    """What the store keeps: the highest version of each candle."""
    best: dict[tuple[str, Interval, datetime], CandleEvent] = {}
    for c in candles:
        k = (c.symbol, c.interval, c.ts)
        if k not in best or c.version >= best[k].version:
            best[k] = c
    return {k: (c.open, c.high, c.low, c.close, c.volume, c.trades) for k, c in best.items()}


def versions_rise(candles: list[CandleEvent]) -> bool:
    """Each candle's versions, in publishing order, strictly increase: the store keeps the newest."""
    last: dict[tuple[str, Interval, datetime], int] = {}
    for c in candles:
        k = (c.symbol, c.interval, c.ts)
        if k in last and c.version <= last[k]:
            return False
        last[k] = c.version
    return True


def published_per_candle(candles: list[CandleEvent]) -> Counter[tuple[str, Interval, datetime]]:
    return Counter((c.symbol, c.interval, c.ts) for c in candles)


def state(builder: CandleBuilder) -> list[tuple[object, ...]]:
    return [
        (c.symbol, c.interval, c.ts, c.open, c.high, c.low, c.close, c.volume, c.trades, c.closed, c.version)
        for c in builder.open_buckets()
    ]


@pytest.mark.parametrize(("seed", "cut", "pause_every"), [(1, 1000, 0), (2, 2345, 7), (3, 3333, 3), (4, 41, 5)])
def test_restart_after_a_committed_batch_gives_the_candles_of_no_restart(seed: int, cut: int, pause_every: int) -> None:
    ticks = feed_ticks(2500, seed)
    cut -= cut % BATCH  # a restart falls between batches: the last committed one and the next
    reference: list[CandleEvent] = []
    whole = CandleBuilder()
    run(whole, ticks, reference, pause_every=pause_every)
    finish(whole, reference)

    published: list[CandleEvent] = []
    first = CandleBuilder()
    run(first, ticks, published, stop=cut, pause_every=pause_every)  # then SIGTERM: everything handled is committed
    second = CandleBuilder()
    result = second.restore(ticks[:cut], published, wall=wall_of(ticks[:cut]))
    assert result.ticks == cut and result.buckets == len(first.open_buckets()) > 0
    assert state(second) == state(first)  # the memory of the first instance, open candles, dedup and versions
    after: list[CandleEvent] = []
    run(second, ticks, after, start=cut, pause_every=pause_every)
    finish(second, after)

    assert final(published + after) == final(reference)
    # nothing published once more (or less) than without the restart: a candle the idle clock closed and a
    # later trade corrected is published twice in both runs
    assert published_per_candle(published + after) == published_per_candle(reference)
    assert versions_rise(published + after)


def test_without_restore_the_open_candles_of_a_restart_miss_their_first_ticks() -> None:
    """What the restore fixes (the check above can fail): a fresh builder builds the daily candle from the
    ticks after the restart only."""
    ticks = feed_ticks(800, 5)
    reference: list[CandleEvent] = []
    whole = CandleBuilder()
    run(whole, ticks, reference)
    finish(whole, reference)
    published: list[CandleEvent] = []
    run(CandleBuilder(), ticks, published, stop=400)
    fresh = CandleBuilder()
    run(fresh, ticks, published, start=400)
    finish(fresh, published)
    daily = (Interval.D1, T0)
    got, want = final(published), final(reference)
    assert got[("BTC", *daily)][5] < want[("BTC", *daily)][5]


class Killed(NamedTuple):
    ticks: list[TickEvent]
    committed: int  # ticks committed before the kill
    handled: int  # ticks whose candles were published before the kill
    reference: list[CandleEvent]  # what a builder that saw every tick published
    published: list[CandleEvent]  # what the killed one published
    restored: CandleBuilder  # its successor, restored from the committed ticks and everything published


def killed_after_publishing(case: str) -> Killed:
    """A feed killed three batches after its last commit (``case``: mid-feed, nothing committed, or a token's
    first trades all in the uncommitted batches), and its successor restored."""
    ticks = feed_ticks(2000, 6)
    committed = {"mid-feed": 1600, "nothing committed": 0}.get(case)
    if committed is None:  # ETH trades from the first uncommitted batch on
        head = [t for t in ticks[:1600] if t.symbol != "ETH"]
        ticks, committed = head + ticks[1600:], len(head) - len(head) % BATCH
    handled = committed + 3 * BATCH
    reference: list[CandleEvent] = []
    whole = CandleBuilder()
    run(whole, ticks, reference, pause_every=4)
    finish(whole, reference)
    published: list[CandleEvent] = []
    run(CandleBuilder(), ticks, published, stop=handled, pause_every=4)
    second = CandleBuilder()
    second.restore(ticks[:committed], published, wall=wall_of(ticks[:handled]))
    return Killed(ticks, committed, handled, reference, published, second)


@pytest.mark.parametrize("case", ["mid-feed", "nothing committed", "a token's first trades uncommitted"])
def test_kill_after_publishing_before_committing_loses_nothing_and_versions_keep_rising(case: str) -> None:
    """kill -9: the last batches' candles were published but their offsets not committed. The restore reads
    the ticks only up to the commit, the published candles all; the uncommitted batches come again. Also when
    nothing was committed yet, and when a token's first trades all came in the uncommitted batches: the
    restore then holds no tick of it, only its published candles."""
    ticks, committed, _, reference, published, second = killed_after_publishing(case)
    after: list[CandleEvent] = []
    run(second, ticks, after, start=committed, pause_every=4)  # the redelivered batches, then the rest
    finish(second, after)

    assert final(published + after) == final(reference)
    assert versions_rise(published + after)  # a candle published again comes with a higher version
    # and none is: the redelivered ticks only bring the restored candles back to what was published
    assert published_per_candle(published + after) == published_per_candle(reference)


def test_the_version_floors_of_candles_no_tick_can_reopen_are_forgotten() -> None:
    """The floors the restore leaves for candles of uncommitted batches go once the watermark is past their
    retention (their ticks were not redelivered: dead-lettered, or the token left), not kept for ever."""
    ticks = feed_ticks(2000, 9)
    published: list[CandleEvent] = []
    run(CandleBuilder(), ticks, published, stop=3 * BATCH)
    second = CandleBuilder()
    second.restore([], published, wall=wall_of(ticks[: 3 * BATCH]))
    assert second._version_floor  # one per published candle
    later = ticks[-BATCH:]  # hours of event time later
    second.add(later, wall=wall_of(later))
    second.tick_clock(wall=wall_of(later))
    assert not second._version_floor


def test_a_bucket_opened_before_the_read_takes_its_published_candle_or_is_dropped() -> None:
    ticks = [t for t in feed_ticks(1500, 7) if t.symbol == "BTC"]
    published: list[CandleEvent] = []
    first = CandleBuilder()
    run(first, ticks, published)
    hour = Interval.H1.bucket_ms(int(ticks[-1].ts.timestamp() * 1000))  # the open hour: read from its start
    read = [t for t in ticks if t.ts.timestamp() * 1000 >= hour - 5 * 60_000]
    second = CandleBuilder()
    result = second.restore(read, published, complete_from_ms=hour, wall=wall_of(ticks))
    kept = {(c.interval, c.ts): c for c in second.open_buckets()}
    want = {(c.interval, c.ts): c for c in first.open_buckets()}
    for (interval, ts), c in want.items():
        start = int(ts.timestamp() * 1000)
        if start >= hour:  # read whole: as it was
            assert kept[(interval, ts)].model_dump(exclude={"event_id", "produced_at"}) == c.model_dump(
                exclude={"event_id", "produced_at"}
            )
        elif c.closed:  # published: its last version, marked published
            got = kept[(interval, ts)]
            assert got.closed and (got.volume, got.trades, got.close) == (c.volume, c.trades, c.close)
        else:  # open, part unread: not rebuilt from a part (the 4h and daily candles here)
            assert (interval, ts) not in kept
    assert result.dropped == sum(1 for (_, ts), c in want.items() if ts.timestamp() * 1000 < hour and not c.closed)
    assert result.dropped >= 2
