"""The scoring service's output events: built without re-validation, yet equal to validated ones;
intraday signals; never a non-finite number."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from tokenpulse_ingest.bundle import bar_to_event, iter_bundle
from tokenpulse_scoring.service import ScoringService
from tokenpulse_shared.events import CandleEvent, Interval
from tokenpulse_shared.settings import DEFAULT_BUNDLE


def test_trusted_events_equal_validated_ones_and_round_trip_as_json() -> None:
    (_, _, bars), (_, _, hours) = iter_bundle(DEFAULT_BUNDLE, ["BTC"], [Interval.H4, Interval.D1])
    candles = [bar_to_event("BTC", Interval.D1, b) for b in bars[:800]] + [
        bar_to_event("BTC", Interval.H4, b) for b in hours[:3000]
    ]
    indicators, grades, signals = ScoringService()._process(candles)
    assert len(indicators) == len(candles) and grades and signals
    assert {s.interval for s in signals} == {Interval.D1, Interval.H4}
    for event in [*indicators[::97], *grades[::31], *signals]:
        validated = type(event).model_validate(event.model_dump())
        assert validated == event
        assert type(event).model_validate_json(event.model_dump_json()) == event
    assert len({e.event_id for e in indicators}) == len(indicators)


def test_absurd_prices_never_give_a_non_finite_output() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    candles = []
    for i in range(60):
        p = 1e-300 if i % 2 else 1e300  # validated as finite and positive, but squares overflow
        ts = t0.replace(day=1 + i % 28, month=1 + i // 28)
        candles.append(CandleEvent(symbol="X", interval=Interval.D1, ts=ts, open=p, high=p, low=p, close=p, volume=1))
    indicators, grades, _ = ScoringService()._process(candles)
    for e in indicators:
        for name in ("rsi_14", "macd", "ema_20", "sma_200", "bb_upper", "atr_14"):
            v = getattr(e, name)
            assert v is None or math.isfinite(v)
    for g in grades:
        for v in (g.trader_grade, g.investor_grade, *g.components.values()):
            assert v is None or math.isfinite(v)
