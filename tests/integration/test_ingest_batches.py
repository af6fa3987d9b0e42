"""Ingest on the batch topics (in-process bus): trades from ``ticks.v1`` (outside producers) and ``ticks.v2``
(our feeds) make one set of candles, published as ``candles.v2`` rows and, while TOKENPULSE_PUBLISH_V1, as
v1 events with the same ids; a group reading both forms receives each candle once; a price row's ``ts_us`` is
the newest exchange time among its token's trades in the batch handled."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tokenpulse_ingest.service import IngestService
from tokenpulse_shared.batches import CandleBatch, PriceBatch, TickBatch, epoch_us
from tokenpulse_shared.bus import rows_as_events
from tokenpulse_shared.bus.kafka import KafkaBus
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.events import CandleEvent, Event, Interval, PriceEvent, TickEvent
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.topics import CANDLES, CANDLES_V2, PRICES, PRICES_V2, TICKS, TICKS_V2

T0 = (datetime.now(UTC) - timedelta(minutes=10)).replace(second=0, microsecond=0)


def trade(i: int, at_s: float, price: float, size: float = 1.0, source: str = "binance") -> TickEvent:
    ts = T0 + timedelta(seconds=at_s)
    return TickEvent(symbol="BTC", source=source, ts=ts, price=price, size=size, trade_id=f"t{i}")


async def until(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def collect(into: list[Any]) -> Callable[[list[Any]], Any]:
    async def handler(events: list[Event]) -> None:
        into.extend(events)

    return handler


async def run_ingest(publish_v1: bool, feed: Callable[[InMemoryBus], Any]) -> dict[str, list[Any]]:
    settings = Settings(runtime={"symbols": ["BTC"]}, ingest={"live_feed": "off"}, bus={"publish_v1": publish_v1})
    bus = InMemoryBus()
    ctx = Context(settings=settings, bus=bus, embedded=True)
    ingest = IngestService()
    ingest.register(ctx)
    got: dict[str, list[Any]] = {"rows": [], "both": [], "v1": [], "prices": [], "price_events": []}
    bus.subscribe(CANDLES_V2, "rows", collect(got["rows"]))
    bus.subscribe(CANDLES, "both", collect(got["both"]))
    bus.subscribe(CANDLES_V2, "both", rows_as_events(collect(got["both"])))
    bus.subscribe(CANDLES, "v1-only", collect(got["v1"]))
    bus.subscribe(PRICES_V2, "prices", collect(got["prices"]))
    bus.subscribe(PRICES, "prices-v1", collect(got["price_events"]))
    await bus.start()
    await ingest.start(ctx)
    try:
        await feed(bus)
        await until(lambda: any(c.interval is Interval.M1 for b in got["rows"] for c in b.to_events()))
        await bus.drain()
    finally:
        await ingest.stop()
        await bus.stop()
    return got


def m1(candles: list[CandleEvent]) -> list[CandleEvent]:
    return [c for c in candles if c.interval is Interval.M1 and c.ts == T0]


@pytest.mark.parametrize("publish_v1", [True, False])
async def test_both_tick_topics_make_one_set_of_candles_published_as_rows(publish_v1: bool) -> None:
    async def feed(bus: InMemoryBus) -> None:
        await bus.publish(TICKS, [trade(1, 1, 100.0), trade(2, 20, 120.0, size=2.0)])
        # our feed's rows: one more trade, and t2 again (a copy: counted once)
        await bus.publish_rows(TICKS_V2, TickBatch.from_events([trade(3, 40, 90.0), trade(2, 20, 120.0, size=2.0)]))
        await bus.publish_rows(TICKS_V2, TickBatch.from_events([trade(4, 65, 110.0)]))  # closes the minute

    got = await run_ingest(publish_v1, feed)
    rows = [c for b in got["rows"] for c in b.to_events()]
    assert all(isinstance(b, CandleBatch) for b in got["rows"])
    (candle,) = m1(rows)
    assert (candle.open, candle.high, candle.low, candle.close) == (100.0, 120.0, 90.0, 90.0)
    assert (candle.trades, candle.volume) == (3, 4.0)
    assert [c.event_id for c in m1(got["both"])] == [candle.event_id]  # once, though published in both forms
    if publish_v1:  # the v1 copy is the row's event
        assert [c.model_dump(exclude={"produced_at"}) for c in m1(got["v1"])] == [
            candle.model_dump(exclude={"produced_at"})
        ]
        assert [c.event_id for c in m1(got["v1"])] == [candle.event_id]
    else:
        assert got["v1"] == [] and got["price_events"] == []


async def test_a_price_row_is_dated_by_the_newest_trade_of_its_token_in_the_batch() -> None:
    newest = 50.123456

    async def feed(bus: InMemoryBus) -> None:
        batch = [trade(1, 10, 100.0), trade(2, newest, 101.0, source="kraken"), trade(3, 30, 100.5)]
        await bus.publish_rows(TICKS_V2, TickBatch.from_events(batch), linger=False)
        await bus.publish_rows(TICKS_V2, TickBatch.from_events([trade(4, 65, 110.0)]))

    got = await run_ingest(True, feed)
    first: PriceBatch = got["prices"][0]
    assert first.symbol == ["BTC"]
    assert first.ts_us == [epoch_us(T0 + timedelta(seconds=newest))]
    assert first.sources == [["binance", "kraken"]]
    (event,) = first.to_events()
    v1: PriceEvent = got["price_events"][0]
    assert v1.event_id == event.event_id == first.row_ids()[0]  # alerts' trigger ids are the same either way
    assert v1.ts == event.ts


async def test_a_batch_larger_than_a_slice_gives_every_token_its_candle_and_one_price() -> None:
    """300 trades of 100 tokens in one ticks.v2 batch: each partition's ~75 rows are handled in slices of whole
    tokens (``tokenpulse_ingest.slices``), and every token still gets its one price row of the batch and its
    whole minute."""
    symbols = [f"TK{i}" for i in range(100)]

    def of(sym: str, i: int, at_s: float, price: float) -> TickEvent:
        return trade(i, at_s, price).model_copy(update={"symbol": sym, "trade_id": f"{sym}-{i}"})

    async def feed(bus: InMemoryBus) -> None:
        trades = [of(sym, i, at, 100.0 + i) for i, at in enumerate((1, 20, 40)) for sym in symbols]
        await bus.publish_rows(TICKS_V2, TickBatch.from_events(trades), linger=False)
        await bus.publish_rows(TICKS_V2, TickBatch.from_events([of(sym, 9, 65, 1.0) for sym in symbols]))

    got = await run_ingest(False, feed)
    first_batch = epoch_us(T0 + timedelta(seconds=40))
    priced = [sym for b in got["prices"] for sym, ts in zip(b.symbol, b.ts_us, strict=True) if ts == first_batch]
    assert sorted(priced) == sorted(symbols)  # one price row each, none lost or doubled by the slicing
    minutes = {c.symbol: c for c in m1([c for b in got["rows"] for c in b.to_events()])}
    assert sorted(minutes) == sorted(symbols)
    assert {(c.trades, c.open, c.close) for c in minutes.values()} == {(3, 100.0, 102.0)}


BAR = {"open": 1.0, "high": 2.0, "low": 1.0, "close": 2.0, "trades": 1, "source": "ticks", "version": 1001}


def candles_of(sym: str, minute: datetime, n: int) -> list[CandleEvent]:
    """``n`` one-minute candles of ``sym`` from ``minute``, all of the same bar."""
    at = [minute + timedelta(minutes=i) for i in range(n)]
    return [
        CandleEvent(event_id=f"candle-{sym}-1m-{i}", symbol=sym, interval=Interval.M1, ts=ts, **BAR)
        for i, ts in enumerate(at)
    ]


async def restore_ingest(bus: KafkaBus, sym: str) -> None:
    """Start a fresh ingest member on ``bus`` and wait for its restore of ``sym`` (a restart's first step)."""
    settings = Settings(runtime={"symbols": [sym]}, ingest={"live_feed": "off"})
    ingest = IngestService()
    ingest.register(Context(settings=settings, bus=bus, embedded=False))
    await bus.start()
    try:  # the group's first assignment restores (on Kafka a replica restores the partitions it is given)
        await asyncio.wait_for(ingest.ready.wait(), 60)
    finally:
        await bus.stop()


@pytest.mark.kafka
async def test_a_restart_publishes_the_v1_copies_a_kill_left_unpublished(kafka_bootstrap: str) -> None:
    """kill -9 between a batch's candles.v2 rows and their v1 copies: the restore, which counts the rows as
    published, sends the missing copies (same id), and no copy twice."""
    sym = "K" + uuid.uuid4().hex[:7].upper()
    minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    candles = candles_of(sym, minute, 3)
    setup = KafkaBus(kafka_bootstrap, client_id="e2e-repair")
    await setup.start()
    await setup.publish_rows(CANDLES_V2, CandleBatch.from_events(candles), linger=False)
    await setup.publish_v1_copy(CANDLES, candles[:1])  # the first batch's copy made it, the others not
    await setup.stop()
    bus = KafkaBus(kafka_bootstrap, group_prefix=f"repair-{sym.lower()}")
    await restore_ingest(bus, sym)
    v1 = [e for e in await setup.read_log(CANDLES) if isinstance(e, CandleEvent) and e.symbol == sym]
    assert sorted(e.event_id for e in v1) == sorted(c.event_id for c in candles)


@pytest.mark.kafka
async def test_a_batch_finished_during_the_restore_reads_is_not_copied_twice(kafka_bootstrap: str) -> None:
    """Another member finishes a batch (rows, then copies) while the restore reads the candle topics: the repair
    must not take its rows for ones whose copy a kill left out, so each v1 copy is published once."""
    sym = "K" + uuid.uuid4().hex[:7].upper()
    minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    late = candles_of(sym, minute, 2)
    other = KafkaBus(kafka_bootstrap, client_id="e2e-repair-race")
    await other.start()
    bus = KafkaBus(kafka_bootstrap, group_prefix=f"repair-{sym.lower()}")
    read_log_chunks, reads = bus.read_log_chunks, []

    async def read_then_publish(topic: Any, *args: Any) -> AsyncIterator[list[Any]]:
        async for chunk in read_log_chunks(topic, *args):
            yield chunk
        if topic in (CANDLES, CANDLES_V2) and not reads:  # between the two candle reads
            reads.append(topic)
            await other.publish_rows(CANDLES_V2, CandleBatch.from_events(late), linger=False)
            await other.publish_v1_copy(CANDLES, late)

    bus.read_log_chunks = read_then_publish  # type: ignore[method-assign]
    await restore_ingest(bus, sym)
    v1 = [e.event_id for e in await other.read_log(CANDLES) if isinstance(e, CandleEvent) and e.symbol == sym]
    await other.stop()
    assert sorted(v1) == sorted(c.event_id for c in late)
