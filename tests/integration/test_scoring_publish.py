"""Scoring's outputs survive a publish that fails: the in-process bus with scoring's output topics away.

Scoring applies a batch of candles to its state before it publishes the outputs; a failed publish used to
lose them for good (the redelivered candles were duplicates to the state, scored nothing, and the batch was
committed). Here the real in-process bus, with its real retry, isolation and dead-letter policy, refuses the
next ``away`` sends to scoring's output topics (indicator rows, their v1 copies, grades, signals) as a
broker that is away would, and then takes them again. The in-process bus rather than a stopped broker: the
failures land exactly on scoring's publishes, a given number of times, with no timing in the test, and the
redelivery policy exercised (``Bus.deliver``) is the one both adapters share; the Kafka adapter's own part,
the rewind and commit of a failed batch, is the contract tests'.

Checked by event id against an uninterrupted reference run on the same candles: every output published,
none lost, none under another id, each with exactly the reference's values, and each sent once (a send
that got through is not repeated).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from tokenpulse_ingest.bundle import bar_to_event, iter_bundle
from tokenpulse_scoring.service import ScoringService
from tokenpulse_shared.batches import CandleBatch
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.events import CandleEvent, Event, Interval
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import DEFAULT_BUNDLE, Settings
from tokenpulse_shared.topics import CANDLES, CANDLES_V2, GRADES, INDICATORS, INDICATORS_V2, SIGNALS, Topic

from testkit.wiring import collected

OUTPUTS = {INDICATORS_V2.name, INDICATORS.name, GRADES.name, SIGNALS.name}
SYMBOLS = ["ETH", "SOL"]  # two partitions of the in-process bus; no BTC, so no value depends on arrival order


class BrokerAway(ConnectionError):
    pass


class FlakyBus(InMemoryBus):
    """The in-process bus whose next ``away`` sends to scoring's output topics fail before anything is delivered."""

    def __init__(self, away: int) -> None:
        super().__init__(backoff_s=0.005)
        self.away = away
        self.refused = 0

    async def _deliver_chunks(self, topic: Topic, chunks: Any, count: int, copy: bool = False) -> None:
        if topic.name in OUTPUTS and self.away:
            self.away -= 1
            self.refused += 1
            raise BrokerAway(f"{topic.name}: broker away")
        await super()._deliver_chunks(topic, chunks, count, copy)


def candles() -> list[CandleEvent]:
    return [
        bar_to_event(symbol, Interval.D1, bar)
        for symbol, _, bars in iter_bundle(DEFAULT_BUNDLE, SYMBOLS, [Interval.D1])
        for bar in bars[-1500:]
    ]


def without_time(e: Event) -> dict[str, Any]:
    """What an output says: everything but its production time."""
    return e.model_dump(exclude={"produced_at"})


async def run(path: str, away: int, sent: list[CandleEvent]) -> tuple[list[Event], list[Event], FlakyBus]:
    """Scoring on a FlakyBus fed ``sent`` in chunks on the v1 or v2 candles topic; the outputs it published."""
    bus = FlakyBus(away)
    settings = Settings(scoring={"predictions": False})
    scoring = ScoringService()
    scoring.register(Context(settings=settings, bus=bus, embedded=True))
    rows = collected(bus, INDICATORS_V2, "observer-rows")
    copies = collected(bus, INDICATORS, "observer-copies")
    events = [collected(bus, topic, "observer") for topic in (GRADES, SIGNALS)]
    await bus.start()
    await scoring.start(scoring.ctx)  # type: ignore[arg-type]
    try:
        for i in range(0, len(sent), 100):
            chunk = sent[i : i + 100]
            if path == "v1":
                await bus.publish(CANDLES, chunk)
            else:
                await bus.publish_rows(CANDLES_V2, CandleBatch.from_events(chunk))
        await bus.drain(timeout=120)
    finally:
        await scoring.stop()
        await bus.stop()
    indicators = [e for batch in rows for e in batch.to_events()]
    return [*indicators, *events[0], *events[1]], copies, bus


@pytest.mark.parametrize(
    ("path", "away"),
    [("v1", 3), ("v2", 3), ("v2", 40)],
    ids=["v1-candles-3-refused", "v2-rows-3-refused", "v2-rows-40-refused-past-the-retries"],
)
async def test_outputs_of_a_failed_publish_are_published_once_the_bus_takes_them(path: str, away: int) -> None:
    sent = candles()
    indicators, grades, signals = ScoringService()._process(sent)
    want = {e.event_id: without_time(e) for e in [*indicators, *grades, *signals]}
    assert signals and grades, "the reference must have every kind of output"

    published, copies, bus = await run(path, away, sent)

    assert bus.refused == away and bus.away == 0  # every refusal happened, on scoring's publishes
    times = Counter(e.event_id for e in published)
    lost = set(want) - set(times)
    assert not lost, f"{len(lost)} of {len(want)} outputs lost, e.g. {sorted(lost)[:3]}"
    assert not set(times) - set(want), "outputs under ids the uninterrupted run does not have"
    assert [e.event_id for e in published if without_time(e) != want[e.event_id]] == []
    assert max(times.values()) == 1, "a send that got through was sent again"
    assert sorted(e.event_id for e in copies) == sorted(e.event_id for e in indicators)  # the v1 copies too
    assert bus.dead_letters == 0  # a candle is never dead-lettered for a publish that failed
    print(
        f"{path}: {len(sent)} candles, {bus.refused} sends refused, {len(want)} outputs published as the reference's, "
        "none dead-lettered"
    )
