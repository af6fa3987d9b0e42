"""Track-record arithmetic on hand-made series whose answers are known."""

from __future__ import annotations

import pytest
from tokenpulse_gateway.analytics.track_record import DAY_MS, SignalPoint, grade_ic, signal_record, spearman


def rising(days: int, step: float = 0.01) -> list[tuple[int, float]]:
    return [(i * DAY_MS, 100 * (1 + step) ** i) for i in range(days)]


def test_spearman_of_monotonic_relations() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def test_a_bullish_signal_held_through_a_rise_earns_the_rise_from_the_next_day() -> None:
    closes = rising(100)
    rec = signal_record("X", closes, [SignalPoint("X", 0, "bullish")], horizon_days=30)
    assert rec is not None
    assert rec.strategy_return == pytest.approx(rec.buy_and_hold_return, rel=1e-9)
    assert rec.hit_rate == 1.0 and rec.max_drawdown == 0.0 and rec.turnover_per_year > 0


def test_a_bearish_signal_stays_flat_and_misses() -> None:
    closes = rising(100)
    rec = signal_record("X", closes, [SignalPoint("X", 0, "bearish")], horizon_days=30)
    assert rec is not None and rec.strategy_return == 0.0 and rec.hit_rate == 0.0


def test_a_signal_does_not_earn_its_own_day() -> None:
    closes = [(0, 100.0), (DAY_MS, 200.0), (2 * DAY_MS, 200.0)]
    rec = signal_record("X", closes, [SignalPoint("X", DAY_MS, "bullish")], horizon_days=1)
    # the jump happened on the signal's own day: following it earns nothing
    assert rec is not None and rec.strategy_return == 0.0


def test_perfect_foresight_grades_have_an_ic_of_one() -> None:
    closes = {
        s: [(i * DAY_MS, 100 * (1 + g) ** i) for i in range(60)]
        for s, g in (("A", 0.01), ("B", 0.02), ("C", -0.01), ("D", 0.0))
    }
    grades = {s: {ts: {"A": 60.0, "B": 70.0, "C": 30.0, "D": 50.0}[s] for ts, _ in closes[s]} for s in closes}
    ic = grade_ic(closes, grades, 7, "trader")
    assert ic.mean_ic == pytest.approx(1.0) and ic.days == 53


def test_intraday_records_skip_gaps_and_charge_costs_per_change() -> None:
    hour = 3_600_000
    closes = [(i * hour, 100.0 + i) for i in range(50)] + [(200 * hour, 1000.0), (201 * hour, 1001.0)]
    sigs = [SignalPoint("X", 0, "bullish", "1h"), SignalPoint("X", 10 * hour, "bearish", "1h")]
    rec = signal_record("X", closes, sigs, horizon_days=24, bar_ms=hour, interval="1h")
    assert rec is not None and rec.interval == "1h" and rec.horizon_bars == 24
    # the jump across the gap (149 -> 1000) is earned by nobody; buy-and-hold compounds the rest
    assert rec.buy_and_hold_return == pytest.approx(149 / 100 * 1001 / 1000 - 1, abs=1e-4)
    assert rec.strategy_return == pytest.approx(110 / 100 - 1, abs=1e-4)  # long from 0 to 10's close
    assert rec.strategy_return_after_costs < rec.strategy_return  # two position changes, 0.1 % each
    assert rec.hit_rate == pytest.approx(0.5)  # the bullish one rose a day later, the bearish one did not fall
    # daily signals are not mixed into an intraday record
    assert signal_record("X", closes, [SignalPoint("X", 0, "bullish")], 24, hour, "1h") is None
