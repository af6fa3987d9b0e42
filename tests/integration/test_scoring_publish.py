"""Scoring's outputs survive a publish that fails: scoring's output topics away, then back.

Scoring applies a batch of candles to its state before it publishes the outputs; a failed publish used to
lose them for good (the redelivered candles were duplicates to the state, scored nothing, and the batch was
committed). Here the real in-process bus, with its real retry, isolation and dead-letter policy, refuses the
next ``away`` sends to scoring's output topics (indicator rows, their v1 copies, grades, signals) as a
broker that is away would, and then takes them again. The in-process bus rather than a stopped broker: the
failures land exactly on scoring's publishes, a given number of times, with no timing in the test, and the
redelivery policy exercised (``Bus.deliver``) is the one both adapters share. The Kafka adapter's own part,
the rewind of a failed batch and the commit, is checked once on the real broker, its producer refusing the
sends as aiokafka does when the broker stays away past the delivery timeout (``KafkaTimeoutError``).

Checked by event id against an uninterrupted reference run on the same candles: every output published,
none lost, none under another id, each with exactly the reference's values, and each sent once (a send
that got through is not repeated).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError
from tokenpulse_ingest.bundle import bar_to_event, iter_bundle
from tokenpulse_scoring.service import ScoringService
from tokenpulse_shared.batches import CandleBatch
from tokenpulse_shared.bus.kafka import KafkaBus
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.events import CandleEvent, Event, Interval
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import DEFAULT_BUNDLE, Settings
from tokenpulse_shared.topics import CANDLES, CANDLES_V2, GRADES, INDICATORS, INDICATORS_V2, SIGNALS, Topic

from testkit.wiring import collected
from tests.e2e.kafka_tools import lag, read_topic

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


class FlakyKafkaBus(KafkaBus):
    """The Kafka bus whose next ``away`` sends to scoring's output topics time out before anything is sent."""

    away = 0
    refused = 0

    async def _send(self, topic: Topic, messages: Any, partitions: list[int] | None = None) -> None:
        if topic.name in OUTPUTS and self.away:
            self.away -= 1
            self.refused += 1
            raise KafkaTimeoutError(f"{topic.name}: broker away")
        await super()._send(topic, messages, partitions)


def candles(symbols: list[str] = SYMBOLS, named: str | None = None, last: int = 1500) -> list[CandleEvent]:
    """The bundle's last daily candles of ``symbols`` (under the name ``named`` if given)."""
    return [
        bar_to_event(named or symbol, Interval.D1, bar)
        for symbol, _, bars in iter_bundle(DEFAULT_BUNDLE, symbols, [Interval.D1])
        for bar in bars[-last:]
    ]


def without_time(e: Event) -> dict[str, Any]:
    """What an output says: everything but its production time."""
    return e.model_dump(exclude={"produced_at"})


def reference(sent: list[CandleEvent]) -> dict[str, dict[str, Any]]:
    """The uninterrupted run's outputs, by event id."""
    indicators, grades, signals = ScoringService()._process(sent)
    assert signals and grades, "the reference must have every kind of output"
    return {e.event_id: without_time(e) for e in [*indicators, *grades, *signals]}


def check(published: list[Event], want: dict[str, dict[str, Any]]) -> None:
    """``published`` is exactly ``want``: every id, no other, the same values, each once."""
    times = Counter(e.event_id for e in published)
    lost = set(want) - set(times)
    assert not lost, f"{len(lost)} of {len(want)} outputs lost, e.g. {sorted(lost)[:3]}"
    assert not set(times) - set(want), "outputs under ids the uninterrupted run does not have"
    assert [e.event_id for e in published if without_time(e) != want[e.event_id]] == []
    assert max(times.values()) == 1, "a send that got through was sent again"


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
    want = reference(sent)

    published, copies, bus = await run(path, away, sent)

    assert bus.refused == away and bus.away == 0  # every refusal happened, on scoring's publishes
    check(published, want)
    assert sorted(e.event_id for e in copies) == sorted(k for k in want if k.startswith("ind-"))  # v1 copies too
    assert bus.dead_letters == 0  # a candle is never dead-lettered for a publish that failed
    print(
        f"{path}: {len(sent)} candles, {bus.refused} sends refused, {len(want)} outputs published as the reference's, "
        "none dead-lettered"
    )


@pytest.mark.kafka
async def test_on_kafka_a_failed_publish_is_rewound_and_its_outputs_published(kafka_bootstrap: str) -> None:
    run = uuid.uuid4().hex[:6].upper()
    sym = "P" + run
    sent = candles(["ETH"], named=sym, last=600)
    want = reference(sent)
    # the group starts at the topics' end (the broker's history is other tests')
    bus = FlakyKafkaBus(
        kafka_bootstrap,
        client_id="scoring-publish",
        group_prefix=f"spub-{run.lower()}",
        backoff_s=0.05,
        from_beginning=False,
    )
    scoring = ScoringService()
    scoring.register(Context(settings=Settings(scoring={"predictions": False}), bus=bus))
    feeder = KafkaBus(kafka_bootstrap, client_id="scoring-publish-feeder")
    await bus.start()
    await feeder.start()
    try:
        await scoring.start(scoring.ctx)  # type: ignore[arg-type]
        deadline = time.monotonic() + 120  # a warm-up candle scored: the group holds its partitions
        while (sym + "W", Interval.D1) not in scoring.series and time.monotonic() < deadline:
            await feeder.publish(CANDLES, candles(["ETH"], named=sym + "W", last=1))
            await asyncio.sleep(1.0)
        assert (sym + "W", Interval.D1) in scoring.series, "scoring never started consuming"
        bus.away = 5
        for i in range(0, len(sent), 100):
            await feeder.publish(CANDLES, sent[i : i + 100])
        group = f"spub-{run.lower()}-scoring"
        committed = False  # every candle handled and committed, so its outputs acknowledged (before stop's flush)
        for _ in range(240):
            committed = not bus.away and not (await lag(kafka_bootstrap, {group: [CANDLES]}))[group]
            if committed:
                break
            await asyncio.sleep(0.5)
        assert committed, "scoring did not catch up"
    finally:
        await feeder.stop()
        await scoring.stop()
        await bus.stop()
    assert bus.refused == 5
    rows = [e for batch in await read_topic(kafka_bootstrap, INDICATORS_V2) for e in batch.to_events()]
    events = [e for topic in (GRADES, SIGNALS) for e in await read_topic(kafka_bootstrap, topic)]
    check([e for e in [*rows, *events] if getattr(e, "symbol", None) == sym], want)
    print(f"kafka: {len(sent)} candles, {bus.refused} sends refused, {len(want)} outputs published as the reference's")
