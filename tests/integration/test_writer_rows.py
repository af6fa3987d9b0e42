"""The store writer inserts v2 batches column by column: the same table rows, and the same deduplication token,
as the batches' rows converted to v1 events give (real chDB engine)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from tokenpulse_gateway.writer import TABLES, StoreWriter
from tokenpulse_shared.batches import CandleBatch, IndicatorBatch, PriceBatch, RowBatch, TickBatch
from tokenpulse_shared.events import Event
from tokenpulse_shared.store import Store

from testkit.batches import sample_events

# sub-millisecond digits on purpose: the table keeps milliseconds, whichever path the rows took
T0 = datetime(2026, 11, 3, 12, 0, 0, 123_987, tzinfo=UTC)
TABLE_OF = {TickBatch: "ticks", PriceBatch: "prices", CandleBatch: "candles", IndicatorBatch: "indicators"}


def batches() -> dict[str, RowBatch]:
    return {TABLE_OF[kind]: kind.from_events(events) for kind, events in sample_events(T0).items()}


async def table_rows(store: Store, table: str) -> list[tuple[Any, ...]]:
    return sorted(await store.query(f"SELECT * FROM {table}"), key=repr)


@pytest.mark.parametrize("table", ["ticks", "prices", "candles", "indicators"])
async def test_rows_are_stored_as_their_v1_events_are(store: Store, table: str) -> None:
    batch = batches()[table]
    writer, spec = StoreWriter(store), TABLES[table]
    events: list[Event] = batch.to_events()
    await writer.write(spec, events)
    as_events = await table_rows(store, table)
    await store.command(f"TRUNCATE TABLE {table}")

    await writer.write_rows(spec, [batch])
    assert await table_rows(store, table) == as_events
    assert len(as_events) == len(batch)


@pytest.mark.parametrize("table", ["ticks", "prices", "candles", "indicators"])
async def test_a_batch_stored_again_either_way_is_not_inserted_twice(store: Store, table: str) -> None:
    batch = batches()[table]
    writer, spec = StoreWriter(store), TABLES[table]
    await writer.write_rows(spec, [batch])
    await writer.write_rows(spec, [batch])  # redelivered
    await writer.write(spec, batch.to_events())  # the same rows as v1 events: the same deduplication token
    count = await store.query(f"SELECT count() FROM {table}")
    assert count[0][0] == len(batch)


async def test_the_hooks_hear_the_series_stored(store: Store) -> None:
    writer = StoreWriter(store)
    heard: list[tuple[str, set[tuple[str, str]]]] = []
    writer.on_stored.append(lambda table, series: heard.append((table, set(series))))
    await writer.write_rows(TABLES["candles"], [batches()["candles"]])
    await writer.write(TABLES["indicators"], batches()["indicators"].to_events())
    await writer.write_rows(TABLES["ticks"], [batches()["ticks"]])
    assert heard == [
        ("candles", {("BTC", "1m"), ("ETH", "1d")}),
        ("indicators", {("BTC", "1m"), ("ETH", "1d")}),
        ("ticks", set()),
    ]


async def test_on_a_broker_a_table_gets_one_insert_per_interval(store: Store) -> None:
    writer = StoreWriter(store, insert_every_s=0.4)
    inserted: list[tuple[str, float]] = []
    real_insert = store.insert

    async def timed_insert(table: str, *args: Any, **kwargs: Any) -> None:
        await real_insert(table, *args, **kwargs)
        inserted.append((table, time.monotonic()))

    store.insert = timed_insert  # type: ignore[method-assign]
    rows = batches()
    await writer.write_rows(TABLES["ticks"], [rows["ticks"]])
    await writer.write_rows(TABLES["prices"], [rows["prices"]])  # another table: not held back
    await writer.write_rows(TABLES["ticks"], [rows["ticks"]])
    (t1, at1), (t2, at2), (t3, at3) = inserted
    assert (t1, t2, t3) == ("ticks", "prices", "ticks")
    assert at2 - at1 < 0.4 <= at3 - at1
