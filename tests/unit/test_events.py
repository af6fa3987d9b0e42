"""Event contracts: strict validation and UTC normalisation."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from tokenpulse_shared.bus.base import RawMessage, decode_message
from tokenpulse_shared.events import CandleEvent, Interval, PriceEvent, TickEvent
from tokenpulse_shared.topics import ALL_TOPICS, BY_NAME, CANDLES, TICKS

T0 = datetime(2024, 12, 5, 2, 38, tzinfo=UTC)


def tick(**kw: object) -> TickEvent:
    base: dict[str, object] = {"symbol": "BTC", "source": "binance", "ts": T0, "price": 100_000.0, "size": 0.5}
    base.update(kw)
    return TickEvent(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("price", [math.nan, math.inf, -1.0, 0.0])
def test_tick_rejects_non_finite_or_non_positive_price(price: float) -> None:
    with pytest.raises(ValidationError):
        tick(price=price)


@pytest.mark.parametrize("symbol", ["btc", "BTC-USD", "", "B" * 16, "BT C"])
def test_tick_rejects_malformed_symbols(symbol: str) -> None:
    with pytest.raises(ValidationError):
        tick(symbol=symbol)


def test_naive_timestamps_are_rejected() -> None:
    with pytest.raises(ValidationError):
        tick(ts=datetime(2024, 1, 1))


def test_timestamps_are_normalised_to_utc() -> None:
    event = tick(ts=datetime(2024, 12, 5, 4, 38, tzinfo=timezone(timedelta(hours=2))))
    assert event.ts == T0
    assert event.ts.utcoffset() == timedelta(0)


def test_every_event_has_id_version_and_produced_at() -> None:
    a, b = tick(), tick()
    assert a.event_id != b.event_id
    assert a.schema_version == 1
    assert a.produced_at.tzinfo is not None


def test_candle_requires_consistent_ohlc_and_aligned_ts() -> None:
    ok = {
        "symbol": "BTC",
        "interval": Interval.H1,
        "ts": T0.replace(minute=0),
        "open": 10.0,
        "high": 12.0,
        "low": 9.0,
        "close": 11.0,
    }
    CandleEvent(**ok)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="high"):
        CandleEvent(**{**ok, "high": 8.0})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="low"):
        CandleEvent(**{**ok, "low": 10.5})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="aligned"):
        CandleEvent(**{**ok, "ts": T0})  # type: ignore[arg-type]


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError):
        PriceEvent(symbol="BTC", ts=T0, price=1.0, bogus=1)  # type: ignore[call-arg]


def test_json_round_trip_through_the_wire_decoder() -> None:
    event = tick()
    raw = RawMessage(event.model_dump_json().encode(), key="BTC")
    assert decode_message(TICKS, raw) == event


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json{", "not JSON"),
        (b"[1,2]", "not a JSON object"),
        (b'{"symbol": "BTC"}', "schema validation failed"),
        (b'{"symbol":"BTC","source":"x","ts":"2024-01-01T00:00:00Z","price":NaN}', "price"),
        (b'{"symbol":"BTC","source":"x","ts":"2024-01-01T00:00:00Z","price":-5}', "price"),
    ],
)
def test_wire_decoder_gives_a_reason_for_bad_messages(body: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        decode_message(TICKS, RawMessage(body))


def test_topic_registry_covers_the_contract() -> None:
    assert set(BY_NAME) == {
        "tokenpulse.ticks.v1",
        "tokenpulse.prices.v1",
        "tokenpulse.candles.v1",
        "tokenpulse.grades.v1",
        "tokenpulse.signals.v1",
        "tokenpulse.predictions.v1",
        "tokenpulse.alert-rules.v1",
        "tokenpulse.alerts.v1",
        "tokenpulse.dead-letter.v1",
        "tokenpulse.marketcaps.v1",
        "tokenpulse.indicators.v1",
        "tokenpulse.metrics.v1",
        "tokenpulse.market-state.v1",
        "tokenpulse.ticks.v2",
        "tokenpulse.prices.v2",
        "tokenpulse.candles.v2",
        "tokenpulse.indicators.v2",
        "tokenpulse.universe.v1",
        "tokenpulse.ingest-checkpoints.v1",
    }
    batched = [t for t in ALL_TOPICS if t.batched]
    assert [t.name for t in batched] == [
        t.name.replace(".v1", ".v2") for t in map(BY_NAME.get, (t.pairs_with for t in batched))
    ]
    assert all(BY_NAME[t.pairs_with or ""].partitions == t.partitions for t in batched)
    compacted = [t.name for t in ALL_TOPICS if t.compacted]
    assert compacted == ["tokenpulse.alert-rules.v1", "tokenpulse.universe.v1", "tokenpulse.ingest-checkpoints.v1"]
    assert CANDLES.model is CandleEvent


@given(
    price=st.floats(min_value=1e-12, max_value=1e12, allow_nan=False, allow_infinity=False),
    size=st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False),
)
def test_any_finite_positive_price_survives_the_wire(price: float, size: float) -> None:
    event = tick(price=price, size=size)
    back = decode_message(TICKS, RawMessage(event.model_dump_json().encode()))
    assert back.price == price and back.size == size  # type: ignore[attr-defined]


def test_bulk_validation_keeps_good_rows_and_names_the_bad_ones() -> None:
    from tokenpulse_shared.events import validate_many

    base = {"symbol": "BTC", "interval": "1h", "open": 10.0, "high": 12.0, "low": 9.0, "close": 11.0}
    rows = [{**base, "ts": T0.replace(minute=0, hour=h)} for h in range(5)]
    rows[1]["high"] = math.nan
    rows[3]["low"] = 11.5  # above open and close
    events, rejected = validate_many(CandleEvent, rows)
    assert [e.ts.hour for e in events] == [0, 2, 4]
    assert [i for i, _ in rejected] == [1, 3]
    assert "high" in rejected[0][1] and "low" in rejected[1][1]


@given(
    o=st.floats(allow_nan=True, allow_infinity=True, width=32),
    h=st.floats(allow_nan=True, allow_infinity=True, width=32),
    lo=st.floats(allow_nan=True, allow_infinity=True, width=32),
    c=st.floats(allow_nan=True, allow_infinity=True, width=32),
)
def test_bulk_and_single_validation_accept_exactly_the_same_candles(o: float, h: float, lo: float, c: float) -> None:
    from tokenpulse_shared.events import validate_many

    row = {
        "symbol": "BTC",
        "interval": "1d",
        "ts": T0.replace(hour=0, minute=0),
        "open": o,
        "high": h,
        "low": lo,
        "close": c,
    }
    try:
        CandleEvent(**row)  # type: ignore[arg-type]
        single_ok = True
    except ValueError:
        single_ok = False
    events, _ = validate_many(CandleEvent, [row])
    assert bool(events) == single_ok
