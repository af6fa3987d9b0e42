"""Ingest's per-partition checkpoints: a builder restored from a checkpoint and the ticks after it is the builder
that saw everything.

The first instance handles the feed in batches, as the consumer does, and takes a checkpoint right after one
batch (published and committed), goes on, and stops: after a commit (SIGTERM), or killed after publishing
batches it did not commit. The second loads the checkpoint as it comes back from the topic (JSON, in parts),
replays only the ticks after its offsets up to the commit, marks the candles published after it, and handles
the rest. The reference is one builder without a restart: same final candles, each published as many times,
versions rising. A checkpoint that must not be used (unreadable, another version, beyond the committed offsets,
parts missing) is refused with the reason: the service then replays the day (``IngestService.restore``).
"""

from __future__ import annotations

import pytest
from tokenpulse_ingest import checkpoint
from tokenpulse_ingest.candles import CandleBuilder
from tokenpulse_ingest.prices import PriceReconciler
from tokenpulse_shared.bus.base import RawMessage, decode_message
from tokenpulse_shared.checkpoints import CHECKPOINT_VERSION, IngestCheckpoint
from tokenpulse_shared.events import CandleEvent, TickEvent
from tokenpulse_shared.topics import INGEST_CHECKPOINTS

from tests.unit.test_candle_restore import (
    BATCH,
    feed_ticks,
    final,
    finish,
    killed_after_publishing,
    published_per_candle,
    run,
    state,
    versions_rise,
    wall_of,
)

GROUP = "tokenpulse-ingest"
TOPIC = "tokenpulse.ticks.v2"


def wire(messages: list[IngestCheckpoint]) -> list[IngestCheckpoint]:
    """The messages as a reader of the topic gets them back."""
    out = []
    for m in messages:
        back = decode_message(INGEST_CHECKPOINTS, RawMessage(m.model_dump_json().encode(), key=m.partition_key()))
        assert isinstance(back, IngestCheckpoint)
        out.append(back)
    return out


def prices_of(reconciler: PriceReconciler) -> list[object]:
    """The reconciler's state, but for the wall time each token's newest trade was seen (a replay's own) and the
    last digits of the decayed volumes (summed in other batches by a replay)."""
    out = []
    for p in reconciler.export(reconciler.symbols()):
        sources = [q.model_copy(update={"volume_usd": float(f"{q.volume_usd:.9g}")}) for q in p.sources]
        out.append(p.model_copy(update={"newest_wall": 0.0, "sources": sources}))
    return out


def live(
    ticks: list[TickEvent], at: int, stop: int, pause_every: int, part_bytes: int
) -> tuple[list[CandleEvent], int, list[IngestCheckpoint], CandleBuilder, PriceReconciler]:
    """The first instance: the batches up to ``at``, a checkpoint, the batches up to ``stop``. What it published,
    how much of it before the checkpoint, the checkpoint's messages, its builder and reconciler."""
    builder, reconciler, published = CandleBuilder(), PriceReconciler(), []
    run(builder, ticks, published, stop=at, pause_every=pause_every)
    for i in range(0, at, BATCH):
        batch = ticks[i : min(i + BATCH, at)]
        reconciler.update(batch, wall=wall_of(batch))
    taken = checkpoint.take(builder, reconciler, builder.symbols() | reconciler.symbols())
    messages = wire(checkpoint.to_messages(GROUP, 0, {TOPIC: at}, taken, part_bytes))
    before = len(published)
    run(builder, ticks, published, start=at, stop=stop, pause_every=pause_every)
    for i in range(at, stop, BATCH):
        batch = ticks[i : min(i + BATCH, stop)]
        reconciler.update(batch, wall=wall_of(batch))
    return published, before, messages, builder, reconciler


def restored(
    messages: list[IngestCheckpoint], ticks: list[TickEvent], committed: int, published: list[CandleEvent], wall: float
) -> tuple[CandleBuilder, PriceReconciler, int]:
    """What ``IngestService.restore`` does for a partition with a usable checkpoint; the ticks it replayed."""
    found, refused = checkpoint.newest(messages, [], GROUP, {TOPIC: {0: committed}}, [0])
    assert refused == {} and set(found) == {0}
    builder, reconciler = CandleBuilder(), PriceReconciler()
    checkpoint.load(builder, reconciler, found[0], wall)
    after = ticks[found[0].offsets[TOPIC] : committed]
    builder.replay(after, wall)
    reconciler.replay(after, wall)
    builder.settle(published, complete_from_ms=None)  # whole buckets: none taken from its published candle
    return builder, reconciler, len(after)


CASES = {
    # name: (checkpoint after tick, committed, handled, pause_every, part_bytes)
    "sigterm right after the checkpoint": (1000, 1000, 1000, 0, 512 * 1024),
    "checkpoint older than the last commit": (800, 1600, 1600, 7, 512 * 1024),
    "kill between publish and commit": (1200, 1600, 1720, 4, 512 * 1024),
    "kill, nothing committed after the checkpoint": (1600, 1600, 1720, 3, 512 * 1024),
    "early checkpoint, many small parts": (80, 2000, 2080, 5, 2_000),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("margin", [0, 25], ids=["candles-after", "candles-from-before"])
def test_restore_from_a_checkpoint_and_the_ticks_after_it_gives_the_candles_of_no_restart(
    case: str, margin: int
) -> None:
    at, committed, handled, pause_every, part_bytes = CASES[case]
    ticks = feed_ticks(1500, 11)
    reference: list[CandleEvent] = []
    whole = CandleBuilder()
    run(whole, ticks, reference, pause_every=pause_every)
    finish(whole, reference)

    published, before, messages, first, first_prices = live(ticks, at, handled, pause_every, part_bytes)
    assert len(messages) > 1 if part_bytes < 10_000 else len(messages) == 1
    # the candles topic is read from a little before the checkpoint was written (``margin`` of them before it)
    since = published[max(0, before - margin) :]
    second, prices, replayed = restored(messages, ticks, committed, since, wall_of(ticks[:handled]))
    assert replayed == committed - at  # only the ticks after the checkpoint
    if handled == committed:  # the memory of the first instance: open candles, dedup, versions, prices
        assert state(second) == state(first)
        assert prices_of(prices) == prices_of(first_prices)
    after: list[CandleEvent] = []
    run(second, ticks, after, start=committed, pause_every=pause_every)  # the uncommitted batches again, the rest
    finish(second, after)

    assert final(published + after) == final(reference)
    assert published_per_candle(published + after) == published_per_candle(reference)
    assert versions_rise(published + after)


def test_the_dedup_window_comes_back_with_the_checkpoint() -> None:
    """A trade counted before the checkpoint and sent again after it (an exchange's re-send, a new event id) is
    not counted twice: the checkpoint holds the trade ids of the last minutes. Without them it would be."""
    ticks = feed_ticks(400, 12)[:400]
    published, before, messages, _, _ = live(ticks, 400, 400, 0, 512 * 1024)
    resent = ticks[-1].model_copy(update={"event_id": "resent-after-the-checkpoint"})
    second, _, _ = restored(messages, ticks, 400, published[before:], wall_of(ticks))
    assert second.add([resent], wall=wall_of(ticks)).duplicates == 1
    bare = [m.model_copy(update={"trade_ids": []}) for m in messages]
    third, _, _ = restored(bare, ticks, 400, published[before:], wall_of(ticks))
    assert third.add([resent], wall=wall_of(ticks)).duplicates == 0


def messages_at(offset: int, **changes: object) -> list[IngestCheckpoint]:
    ticks = feed_ticks(200, 13)
    _, _, messages, _, _ = live(ticks, offset, offset, 0, 4_000)
    return [m.model_copy(update=changes) for m in messages]


def test_the_newest_whole_checkpoint_of_the_group_is_taken() -> None:
    old, new = messages_at(120), messages_at(200)
    other = [m.model_copy(update={"group": "another-ingest"}) for m in messages_at(240)]
    found, refused = checkpoint.newest(old + new + other, [], GROUP, {TOPIC: {0: 240}}, [0])
    assert refused == {} and found[0].offsets == {TOPIC: 200}
    # the newest lost a part (a kill while writing it): the one before is whole
    found, _ = checkpoint.newest(old + new[1:], [], GROUP, {TOPIC: {0: 240}}, [0])
    assert found[0].offsets == {TOPIC: 120}


@pytest.mark.parametrize(
    ("messages", "unreadable", "committed", "why"),
    [
        ([], [], 200, "no checkpoint"),
        ("ok", [f"{GROUP}/0/1"], 200, "an unreadable checkpoint"),
        ("v0", [], 200, f"a checkpoint of version 0, not {CHECKPOINT_VERSION}"),
        ("ok", [], 199, "a checkpoint beyond the committed offsets"),
        ("other topics", [], 200, "a checkpoint of other ticks topics"),
    ],
)
def test_a_checkpoint_that_must_not_be_used_is_refused_with_the_reason(
    messages: object, unreadable: list[str], committed: int, why: str
) -> None:
    made = {
        "ok": messages_at(200),
        "v0": messages_at(200, version=0),
        "other topics": messages_at(200, offsets={"tokenpulse.ticks.v9": 200}),
    }
    given = made[messages] if isinstance(messages, str) else []
    found, refused = checkpoint.newest(given, unreadable, GROUP, {TOPIC: {0: committed}}, [0])
    assert found == {} and refused == {0: why}


def test_an_unreadable_message_of_the_topic_is_not_a_checkpoint() -> None:
    good = messages_at(200)[0]
    with pytest.raises(ValueError, match="schema validation failed"):
        decode_message(INGEST_CHECKPOINTS, RawMessage(good.model_dump_json().replace('"trades"', '"trade"').encode()))


def test_a_checkpoint_taken_right_after_a_restore_keeps_its_version_floors() -> None:
    """Killed after publishing candles of a token none of whose trades were committed: the restore holds only
    their version floors; a checkpoint then (before the redelivered batches) carries them, so the candles the
    redelivered trades create again go out at higher versions, each as often as without the restarts."""
    ticks, committed, handled, reference, published, second = killed_after_publishing(
        "a token's first trades uncommitted"
    )
    taken = checkpoint.take(second, PriceReconciler(), second.symbols())
    assert taken.builder.floors  # ETH's published candles
    messages = wire(checkpoint.to_messages(GROUP, 0, {TOPIC: committed}, taken))
    third, _, replayed = restored(messages, ticks, committed, [], wall_of(ticks[:handled]))
    assert replayed == 0 and state(third) == state(second)
    after: list[CandleEvent] = []
    run(third, ticks, after, start=committed, pause_every=4)
    finish(third, after)

    assert final(published + after) == final(reference)
    assert versions_rise(published + after)
    assert published_per_candle(published + after) == published_per_candle(reference)
