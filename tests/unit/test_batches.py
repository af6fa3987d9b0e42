"""The batch models of the v2 topics: a column accepts exactly the values its v1 field accepts, rows convert to
v1 events and back without loss, and a batch is refused as a whole with a reason naming the bad row."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from tokenpulse_shared.batches import (
    BATCH_MODELS,
    MAX_BATCH_ROWS,
    MAX_TS_US,
    MIN_TS_US,
    CandleBatch,
    PriceBatch,
    RowBatch,
    TickBatch,
    epoch_us,
    from_epoch_us,
    price_row_id,
)
from tokenpulse_shared.bus.base import RawMessage, decode_message
from tokenpulse_shared.events import Event, PriceEvent
from tokenpulse_shared.topics import ALL_TOPICS, BY_NAME

from testkit.batches import sample_events
from testkit.strategies import HOSTILE

T0 = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
TIME_COLUMNS = {"ts_us", "ts_ms"}


def v1_samples() -> dict[type[RowBatch], list[Event]]:
    samples = sample_events(T0)
    samples[PriceBatch] = [p.model_copy(update={"event_id": price_row_id(*price_row(p))}) for p in samples[PriceBatch]]
    return samples


def price_row(p: PriceEvent) -> tuple[Any, ...]:
    return (p.symbol, epoch_us(p.ts), p.price, p.sources, p.stale, p.prev_price)


def strip(event: Event) -> dict[str, Any]:
    return event.model_dump(exclude={"produced_at"})


@pytest.mark.parametrize("model", BATCH_MODELS, ids=lambda m: m.__name__)
def test_each_column_has_the_bounds_of_its_v1_field(model: type[RowBatch]) -> None:
    """JSON Schema of every column's items equals the v1 field's schema (time columns: see the next test)."""
    batch = model.model_json_schema()["properties"]
    event = model.ROW_MODEL.model_json_schema()
    for name in model.COLUMNS:
        if name in TIME_COLUMNS or name == "row_id":
            continue
        column = batch[name]
        assert (column["minItems"], column["maxItems"]) == (1, MAX_BATCH_ROWS)
        field = {k: v for k, v in event["properties"][name].items() if k not in ("default", "title", "description")}
        items = {k: v for k, v in column["items"].items() if k not in ("title", "description")}
        assert items == field, f"{model.__name__}.{name}"


def test_time_columns_hold_every_instant_a_v1_time_holds() -> None:
    assert epoch_us(datetime.min.replace(tzinfo=UTC)) == MIN_TS_US
    assert epoch_us(datetime.max.replace(tzinfo=UTC)) == MAX_TS_US
    assert from_epoch_us(MIN_TS_US) == datetime.min.replace(tzinfo=UTC)
    assert from_epoch_us(MAX_TS_US) == datetime.max.replace(tzinfo=UTC)


@pytest.mark.parametrize("model", BATCH_MODELS, ids=lambda m: m.__name__)
def test_rows_convert_to_v1_events_and_back_without_loss(model: type[RowBatch]) -> None:
    events = v1_samples()[model]
    batch = model.from_events(events, event_id="batch-0001")
    decoded = decode_message(BY_NAME[_topic_of(model)], RawMessage(encode(batch)))
    assert decoded == batch
    back = decoded.to_events()
    assert [type(e) for e in back] == [model.ROW_MODEL] * len(events)
    # a trusted row equals the event pydantic validates from it
    assert [model.ROW_MODEL.model_validate(e.model_dump()) for e in back] == back
    if model is TickBatch:  # a tick's event id is not carried: its identity (dedup key) is
        assert [e.dedup_key() for e in back] == batch.dedup_keys() == ["binance:42", "batch-0001#1"]
        assert [{**strip(e), "event_id": None} for e in back] == [{**strip(e), "event_id": None} for e in events]
    else:
        assert [strip(e) for e in back] == [strip(e) for e in events]
        assert batch.row_ids() == [e.event_id for e in events]


def _topic_of(model: type[RowBatch]) -> str:
    return next(t.name for t in ALL_TOPICS if t.model is model)


def encode(batch: RowBatch) -> bytes:
    return batch.model_dump_json().encode()


def doc_of(model: type[RowBatch]) -> dict[str, Any]:
    return json.loads(encode(model.from_events(v1_samples()[model], event_id="batch-0001")))


@pytest.mark.parametrize("model", BATCH_MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_a_cell_is_valid_exactly_when_the_v1_field_is(model: type[RowBatch], value: Any) -> None:
    """The same JSON value, in row 0 of a column or in the v1 event's field (both strict): the same verdict."""
    doc = doc_of(model)
    event = json.loads(v1_samples()[model][0].model_dump_json())
    for name in model.COLUMNS:
        if name in TIME_COLUMNS or name == "row_id":
            continue
        cell = {**doc, name: [value, *doc[name][1:]]}
        row_ok = accepts(model, cell)
        v1_ok = accepts(model.ROW_MODEL, {**event, name: value})
        assert row_ok == v1_ok, f"{model.__name__}.{name} = {value!r}: row {row_ok}, v1 {v1_ok}"


def accepts(model: type[Event], doc: dict[str, Any]) -> bool:
    try:
        model.model_validate_json(json.dumps(doc), strict=True)
    except ValidationError:
        return False
    return True


@settings(max_examples=300)
@given(st.integers(min_value=MIN_TS_US - 2, max_value=MAX_TS_US + 2) | st.floats() | st.text(max_size=5))
def test_a_time_cell_is_valid_exactly_when_it_is_an_instant(value: Any) -> None:
    doc = doc_of(TickBatch)
    valid = isinstance(value, int) and MIN_TS_US <= value <= MAX_TS_US
    assert accepts(TickBatch, {**doc, "ts_us": [value, *doc["ts_us"][1:]]}) == valid


def test_a_bad_row_fails_the_batch_naming_the_row() -> None:
    doc = doc_of(TickBatch)
    with pytest.raises(ValueError, match=r"schema validation failed for TickBatch: price\.1"):
        decode_message(BY_NAME["tokenpulse.ticks.v2"], RawMessage(json.dumps({**doc, "price": [1.0, -1.0]}).encode()))
    candles = doc_of(CandleBatch)
    with pytest.raises(ValueError, match="row 1: high must be >= open"):
        decode_message(
            BY_NAME["tokenpulse.candles.v2"], RawMessage(json.dumps({**candles, "high": [3.0, 1.0]}).encode())
        )
    with pytest.raises(ValueError, match="row 0: ts_ms must be aligned to the 1m interval"):
        bad = {**candles, "ts_ms": [candles["ts_ms"][0] + 1, candles["ts_ms"][1]]}
        decode_message(BY_NAME["tokenpulse.candles.v2"], RawMessage(json.dumps(bad).encode()))


@pytest.mark.parametrize("model", BATCH_MODELS, ids=lambda m: m.__name__)
def test_ragged_empty_or_oversized_batches_are_refused(model: type[RowBatch]) -> None:
    doc = doc_of(model)
    last = model.COLUMNS[-1]
    assert not accepts(model, {**doc, last: doc[last][:1]})
    assert not accepts(model, {**doc, **{name: [] for name in model.COLUMNS}})
    big = {**doc, **{name: [doc[name][0]] * (MAX_BATCH_ROWS + 1) for name in model.COLUMNS}}
    assert not accepts(model, big)
    fits = {**doc, **{name: [doc[name][0]] * MAX_BATCH_ROWS for name in model.COLUMNS}}
    assert accepts(model, fits)
    assert not accepts(model, {k: v for k, v in doc.items() if k != "event_id"})  # rows may take ids from it


def test_take_and_concat_keep_rows_whole() -> None:
    batch = TickBatch.from_events(v1_samples()[TickBatch] * 3, event_id="batch-0002")
    picked = batch.take([4, 1])
    assert picked.symbol == ["BTC", "ETH"] and picked.trade_id == ["42", None]
    assert TickBatch.model_validate_json(encode(picked)) == picked
    assert TickBatch.concat([picked, batch])[0] == ["BTC", "ETH", *batch.symbol]


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)))
def test_epoch_microseconds_are_exact(ts: datetime) -> None:
    assert epoch_us(ts) == (ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert from_epoch_us(epoch_us(ts)) == ts
