"""The store on the real ClickHouse engine (chDB): migrations, idempotent inserts, replacing versions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tokenpulse_gateway.writer import TABLES, StoreWriter
from tokenpulse_shared.events import CandleEvent, Interval
from tokenpulse_shared.store import Store
from tokenpulse_shared.store.migrations import MIGRATIONS

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def candle(i: int, version: int = 0, volume: float = 1.0) -> CandleEvent:
    return CandleEvent(
        event_id=f"candle-{i:06d}",
        symbol="BTC",
        interval=Interval.H1,
        ts=T0 + timedelta(hours=i),
        open=10,
        high=12,
        low=9,
        close=11,
        volume=volume,
        version=version,
    )


async def test_migrations_are_versioned_and_idempotent(store: Store) -> None:
    assert await store.migrate() == []  # the fixture already applied them all
    rows = await store.query("SELECT version FROM schema_migrations FINAL ORDER BY version")
    assert [r[0] for r in rows] == [m.version for m in MIGRATIONS]
    tables = {r[0] for r in await store.query("SHOW TABLES")}
    assert {
        "candles",
        "ticks",
        "prices",
        "grades",
        "signals",
        "predictions",
        "alert_firings",
        "alert_rules",
        "dead_letters",
        "api_keys",
    } <= tables


async def write(store: Store, events: list[CandleEvent]) -> None:
    await StoreWriter(store).write(TABLES["candles"], events)


async def test_a_retried_batch_is_not_inserted_twice(store: Store) -> None:
    batch = [candle(i) for i in range(100)]
    await write(store, batch)
    await write(store, batch)  # the same batch again (redelivery): dedup token drops it
    assert (await store.query("SELECT count() FROM candles"))[0][0] == 100


async def test_redelivered_events_in_other_batches_replace_themselves(store: Store) -> None:
    await write(store, [candle(i) for i in range(10)])
    await write(store, [candle(i) for i in range(5, 15)])  # overlaps 5..9 in a different batch
    rows = await store.query("SELECT count(), sum(volume) FROM candles FINAL")
    assert rows[0] == (15, 15.0)


async def test_the_highest_version_of_a_candle_wins_whatever_the_arrival_order(store: Store) -> None:
    await write(store, [candle(0, version=3, volume=30.0)])
    await write(store, [candle(0, version=1, volume=10.0).model_copy(update={"event_id": "other-0001"})])
    rows = await store.query("SELECT volume, version FROM candles FINAL")
    assert rows == [(30.0, 3)]


async def test_a_second_engine_in_the_same_process_is_refused(store: Store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RuntimeError, match="one engine per process"):
        await Store(f"chdb://{tmp_path / 'other'}").open()
