"""The columnar tick batch: its fast decoder accepts exactly what the pydantic model accepts.

``decode_tick_batch`` runs msgspec (bounds checked in C) and a check of the distinct symbols and quotes; what
that refuses goes to pydantic. On any JSON document the fast verdict is pydantic's verdict and the batches are
equal (so no valid batch ever pays for the slow path); on arbitrary bytes whatever the fast path accepts,
pydantic accepts too, and the decoder as a whole answers as pydantic does."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from tokenpulse_shared.batches import (
    MAX_BATCH_ROWS,
    TICK_COLUMNS,
    TickBatch,
    _fast,
    decode_tick_batch,
    encode_tick_batch,
    epoch_us,
    tick_batch,
)
from tokenpulse_shared.events import Side, TickEvent

from testkit.strategies import HOSTILE, json_values, times

T0 = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
ROWS: list[list[Any]] = [
    ["BTC", "ETH", "SOL"],
    ["binance", "coinbase", "kraken"],
    [epoch_us(T0), epoch_us(T0) + 1, epoch_us(T0) + 999_999],
    [97000.5, 3000.25, 150.0],
    [0.25, 0.0, 12.5],
    [Side.BUY, Side.SELL, Side.UNKNOWN],
    ["42", "a-b-c", None],
    ["USDT", "USD", "USD"],
]
VALID = tick_batch(ROWS, event_id="batch-0001", produced_at=T0)
BASE: dict[str, Any] = json.loads(encode_tick_batch(VALID))


def verdicts(raw: bytes) -> tuple[TickBatch | None, TickBatch | None]:
    try:
        fast: TickBatch | None = _fast(raw)
    except ValueError:
        fast = None
    try:
        slow: TickBatch | None = TickBatch.model_validate_json(raw)
    except ValidationError:
        slow = None
    return fast, slow


def assert_not_looser(raw: bytes) -> tuple[TickBatch | None, TickBatch | None]:
    fast, slow = verdicts(raw)
    if fast is not None:
        assert slow is not None, f"the fast decoder accepted what TickBatch refuses: {raw[:300]!r}"
        assert fast == slow
        assert fast.model_dump() == slow.model_dump()
        assert json.loads(encode_tick_batch(fast)) == json.loads(slow.model_dump_json())
    return fast, slow


def assert_exact(doc: Any) -> None:
    raw = json.dumps(doc).encode()
    fast, slow = assert_not_looser(raw)
    assert (fast is None) == (slow is None), f"the fast decoder refused what TickBatch accepts: {raw[:300]!r}"


def test_a_valid_batch_takes_the_fast_path_and_equals_pydantic() -> None:
    raw = encode_tick_batch(VALID)
    fast, slow = verdicts(raw)
    assert fast is not None and slow is not None
    assert fast == slow == VALID
    assert raw == VALID.model_dump_json().encode()
    assert decode_tick_batch(raw) == VALID
    assert fast.model_fields_set == slow.model_fields_set


@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_one_hostile_value_gets_the_models_verdict(value: Any) -> None:
    for name in BASE:
        assert_exact({**BASE, name: value})
        if name in TICK_COLUMNS:
            assert_exact({**BASE, name: [value, *BASE[name][1:]]})
            assert_exact({**BASE, name: [*BASE[name], value]})  # one row too many in one column
    assert_exact({**BASE, "extra": value})


@pytest.mark.parametrize("name", ["event_id", "produced_at", "schema_version", *TICK_COLUMNS])
def test_a_missing_field_gets_the_models_verdict(name: str) -> None:
    assert_exact({k: v for k, v in BASE.items() if k != name})


@pytest.mark.parametrize("rows", [0, 1, MAX_BATCH_ROWS, MAX_BATCH_ROWS + 1])
def test_batch_size_bounds(rows: int) -> None:
    doc = {**BASE, **{c: (BASE[c] * (rows // 3 + 1))[:rows] for c in TICK_COLUMNS}}
    assert_exact(doc)
    accepted = verdicts(json.dumps(doc).encode())[1] is not None
    assert accepted == (1 <= rows <= MAX_BATCH_ROWS)


def test_each_pattern_remembers_its_own_matches() -> None:
    """``A`` is a valid symbol; seen as one, it is still too short a quote."""
    assert_exact({**BASE, "symbol": ["A", "ETH", "SOL"]})
    assert_exact({**BASE, "quote": ["A", "USD", "USD"]})
    assert verdicts(json.dumps({**BASE, "quote": ["A", "USD", "USD"]}).encode()) == (None, None)


def test_times_with_offsets_become_utc() -> None:
    doc = {**BASE, "produced_at": "2026-11-03T14:00:00+02:00"}
    batch = decode_tick_batch(json.dumps(doc).encode())
    assert batch.produced_at == T0 and batch.produced_at.tzinfo is UTC
    assert_exact(doc)


def test_duplicate_keys_get_the_models_verdict() -> None:
    text = encode_tick_batch(VALID).decode()
    assert_not_looser(text.replace('{"event_id"', '{"schema_version":1,"event_id"', 1).encode())
    assert_not_looser(text.replace('{"event_id"', '{"price":[1.0,2.0],"event_id"', 1).encode())
    assert_not_looser(text.replace('{"event_id"', '{"price":[-1.0,2.0,3.0],"event_id"', 1).encode())


def test_refusals_keep_pydantic_reasons() -> None:
    bad = {**BASE, "price": [97000.5, -1.0, 150.0]}
    with pytest.raises(ValueError, match=r"schema validation failed for TickBatch: price\.1"):
        decode_tick_batch(json.dumps(bad).encode())
    ragged = {**BASE, "size": [0.25, 0.0]}
    with pytest.raises(ValueError, match="same number of rows"):
        decode_tick_batch(json.dumps(ragged).encode())


def test_rows_are_the_trades_a_per_trade_message_would_carry() -> None:
    events = VALID.to_events()
    assert [TickEvent.model_validate(e.model_dump()) for e in events] == events
    assert [e.dedup_key() for e in events[:2]] == VALID.dedup_keys()[:2] == ["binance:42", "coinbase:a-b-c"]
    assert VALID.dedup_keys()[2] == "batch-0001#2"
    assert [epoch_us(e.ts) for e in events] == VALID.ts_us


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)))
def test_epoch_microseconds_are_exact(ts: datetime) -> None:
    assert epoch_us(ts) == (ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


cells = (
    json_values
    | st.sampled_from(["BTC", "X1", "USD", "buy", "sell", "unknown", "binance", "", "a" * 129])
    | st.integers(min_value=-1, max_value=2**64)
    | st.floats(min_value=-1e300, max_value=1e300, allow_nan=False)
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    changes=st.dictionaries(
        st.sampled_from(["event_id", "produced_at", "schema_version", *TICK_COLUMNS]),
        json_values | times | st.lists(cells, min_size=1, max_size=4),
        max_size=3,
    ),
    cell_changes=st.lists(
        st.tuples(st.sampled_from(TICK_COLUMNS), st.integers(min_value=0, max_value=2), cells), max_size=3
    ),
)
def test_random_documents_get_the_models_verdict(
    changes: dict[str, Any], cell_changes: list[tuple[str, int, Any]]
) -> None:
    doc = {**BASE, **changes}
    for column, row, value in cell_changes:
        if isinstance(doc.get(column), list) and row < len(doc[column]):
            doc[column] = [*doc[column][:row], value, *doc[column][row + 1 :]]
    assert_exact(doc)


@settings(max_examples=200)
@given(raw=st.binary(max_size=300))
def test_random_bytes_never_looser(raw: bytes) -> None:
    assert_not_looser(raw)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(min_value=0, max_value=400), byte=st.integers(min_value=0, max_value=255))
def test_damaged_messages_never_looser(cut: int, byte: int) -> None:
    raw = bytearray(encode_tick_batch(VALID))
    raw[cut % len(raw)] = byte
    assert_not_looser(bytes(raw))
