"""The msgspec fast path for ticks, prices and candles is never looser than the pydantic models.

Whatever the fast decoder accepts, pydantic accepts too and makes the same event of it; what it
refuses goes to pydantic (``decode_message``), so dead-letter reasons do not change."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from tokenpulse_shared.bus.base import RawMessage, decode_message, encode_event
from tokenpulse_shared.bus.fastdecode import FAST
from tokenpulse_shared.events import CandleEvent, Event, Interval, PriceEvent, TickEvent
from tokenpulse_shared.topics import CANDLES, PRICES, TICKS

from testkit.strategies import HOSTILE, json_values, times

T0 = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)

VALID: dict[type[Event], Event] = {
    TickEvent: TickEvent(symbol="BTC", source="binance", ts=T0, price=65000.5, size=0.25, trade_id="42"),
    PriceEvent: PriceEvent(symbol="ETH", ts=T0, price=3000.0, sources=["binance", "kraken"], prev_price=2999.0),
    CandleEvent: CandleEvent(
        symbol="SOL", interval=Interval.H1, ts=T0, open=10, high=12, low=9, close=11, volume=5, trades=3, version=2
    ),
}


def both(model: type[Event], raw: bytes) -> tuple[Event | None, Event | None]:
    try:
        fast: Event | None = FAST[model](raw)
    except ValueError:
        fast = None
    try:
        slow: Event | None = model.model_validate_json(raw)
    except ValidationError:
        slow = None
    return fast, slow


def assert_not_looser(model: type[Event], raw: bytes) -> None:
    fast, slow = both(model, raw)
    if fast is not None:
        assert slow is not None, f"fast path accepted what {model.__name__} refuses: {raw!r}"
        assert fast == slow
        assert fast.model_dump() == slow.model_dump()
        assert encode_event(fast) == encode_event(slow)


@pytest.mark.parametrize("model", list(VALID))
def test_valid_events_take_the_fast_path_and_equal_pydantic(model: type[Event]) -> None:
    raw = encode_event(VALID[model])
    fast, slow = both(model, raw)
    assert fast is not None and slow is not None
    assert fast == slow == VALID[model]
    assert fast.model_fields_set == slow.model_fields_set


@pytest.mark.parametrize("model", list(VALID))
@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_one_hostile_field_is_never_accepted_more_leniently(model: type[Event], value: Any) -> None:
    base = json.loads(encode_event(VALID[model]))
    for name in base:
        doc = {**base, name: value}
        assert_not_looser(model, json.dumps(doc).encode())
    missing = {k: v for k, v in base.items() if k != "price" and k != "open"}
    assert_not_looser(model, json.dumps(missing).encode())
    assert_not_looser(model, json.dumps({**base, "extra": value}).encode())


def test_times_with_offsets_become_utc() -> None:
    doc = json.loads(encode_event(VALID[PriceEvent]))
    doc["ts"] = "2026-11-03T14:00:00+02:00"
    fast = FAST[PriceEvent](json.dumps(doc).encode())
    assert fast.ts == T0 and fast.ts.tzinfo is UTC
    assert fast == PriceEvent.model_validate_json(json.dumps(doc))


def test_escaped_sub_microsecond_times_go_to_pydantic() -> None:
    base = encode_event(VALID[PriceEvent]).decode()
    doc = json.loads(base)
    escaped = base.replace(f'"ts":"{doc["ts"]}"', '"ts":"2026-11-03T12:00:00\\u002e1234567Z"').encode()
    assert b"u002e" in escaped
    assert_not_looser(PriceEvent, escaped)
    assert decode_message(PRICES, RawMessage(escaped)).ts == T0.replace(microsecond=123456)


def test_candle_model_checks_apply_on_the_fast_path() -> None:
    doc = json.loads(encode_event(VALID[CandleEvent]))
    bad_ohlc = {**doc, "high": 8}
    unaligned = {**doc, "ts": (T0 + timedelta(minutes=1)).isoformat()}
    for bad in (bad_ohlc, unaligned):
        with pytest.raises(ValueError):
            FAST[CandleEvent](json.dumps(bad).encode())
        with pytest.raises(ValueError, match="schema validation failed"):
            decode_message(CANDLES, RawMessage(json.dumps(bad).encode()))


def test_refusals_keep_pydantic_reasons() -> None:
    doc = json.loads(encode_event(VALID[TickEvent]))
    with pytest.raises(ValueError, match=r"schema validation failed for TickEvent: price"):
        decode_message(TICKS, RawMessage(json.dumps({**doc, "price": -1}).encode()))
    # lenient but valid to pydantic (a number as a string): the fast path refuses, pydantic accepts
    lenient = json.dumps({**doc, "price": "65000.5"}).encode()
    assert both(TickEvent, lenient)[0] is None
    assert decode_message(TICKS, RawMessage(lenient)) == VALID[TickEvent]
    assert decode_message(PRICES, RawMessage(encode_event(VALID[PriceEvent]))) == VALID[PriceEvent]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    model=st.sampled_from(list(VALID)),
    changes=st.dictionaries(
        st.sampled_from(
            ["symbol", "price", "ts", "produced_at", "open", "high", "low", "close", "size", "side", "interval"]
        ),
        json_values | times | st.floats(min_value=1e-300, max_value=1e300),
        max_size=4,
    ),
)
def test_random_documents_never_looser(model: type[Event], changes: dict[str, Any]) -> None:
    base = json.loads(encode_event(VALID[model]))
    doc = {**base, **{k: v for k, v in changes.items() if k in base}}
    assert_not_looser(model, json.dumps(doc).encode())


@settings(max_examples=200)
@given(model=st.sampled_from(list(VALID)), raw=st.binary(max_size=300))
def test_random_bytes_never_looser(model: type[Event], raw: bytes) -> None:
    assert_not_looser(model, raw)
