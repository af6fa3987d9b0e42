"""Trader Grade, Investor Grade and bullish/bearish signals, from daily candles (method ``v1``).

Every component is a number mapped to 0..100 by a fixed, documented squashing
(``50 + 50 * tanh(x / scale)`` for signed quantities, linear clips otherwise), so a grade
means the same thing for every token and at every date; the components are published with
the grade. docs/methodology.md lists the formulas and why.

Trader Grade (short-term momentum and trend quality), equal weights over the components
that are defined: RSI(14) itself; MACD histogram / ATR(14); trend alignment (close > EMA20,
EMA20 > EMA50, EMA50 > SMA200, close > SMA200: 25 points each); 20-day return / 20-day
volatility; volume confirmation (today's volume / its 20-day mean, signed by the day's
direction). The 30-day return relative to BTC's is published as a component but not
averaged (it depends on cross-symbol arrival order; see docs/methodology.md).

Investor Grade (long-term health): close / SMA200; drawdown from the all-time high;
1-year return / annualised volatility; liquidity (30-day mean USD volume, log-scaled
$1M..$10B); market cap (log-scaled $100M..$1T) when known; fundamentals when supplied
(none yet: the component says so and is left out of the average).

Signals: a state machine on the Trader Grade with hysteresis — bullish when it reaches
60, back to neutral below 50; bearish when it reaches 40, back to neutral above 50. A
signal event is emitted on entering bullish or bearish, with strength |grade - 50| / 50
and the reasons that agree with the direction.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

METHOD = "v1"
BULL_ENTER, BEAR_ENTER, NEUTRAL = 60.0, 40.0, 50.0


def squash(x: float, scale: float) -> float:
    return 50.0 + 50.0 * math.tanh(x / scale)


def clip01(x: float) -> float:
    return 100.0 * min(1.0, max(0.0, x))


def log_scale(value: float, low: float, high: float) -> float:
    if value <= 0:
        return 0.0
    return clip01((math.log10(value) - math.log10(low)) / (math.log10(high) - math.log10(low)))


def _mean(xs: Any) -> float:
    return math.fsum(xs) / len(xs)


def fundamental_scores(metrics: dict[str, float], market_cap: float | None) -> dict[str, float]:
    """0..100 sub-scores of the supplied fundamentals (docs/methodology.md)."""
    out = {}
    if "tvl_usd" in metrics:
        out["tvl"] = log_scale(metrics["tvl_usd"], 1e8, 1e11)
    if "staking_ratio" in metrics:
        out["staking"] = clip01(metrics["staking_ratio"] / 0.6)
    if "etf_net_flow_30d_usd" in metrics:
        flow = metrics["etf_net_flow_30d_usd"]
        out["etf_flows"] = squash(flow / market_cap, 0.01) if market_cap else squash(flow / 1e9, 1.0)
    return out


def next_regime(regime: str, grade: float) -> str:
    """Hysteresis: enter bullish at 60 / bearish at 40; leave either only when back across 50."""
    if regime != "bullish" and grade >= BULL_ENTER:
        return "bullish"
    if regime != "bearish" and grade <= BEAR_ENTER:
        return "bearish"
    if (regime == "bullish" and grade < NEUTRAL) or (regime == "bearish" and grade > NEUTRAL):
        return "neutral"
    return regime


@dataclass
class GradeResult:
    trader_grade: float | None
    investor_grade: float | None
    components: dict[str, float | None]
    signal: tuple[str, float, list[str]] | None  # (direction, strength, reasons) when the state changed
    ret_30d: float | None


@dataclass
class _RollingStd:
    """Sample standard deviation of the last n values, O(1) per update (exact re-sum every n)."""

    n: int
    values: deque[float] = field(default_factory=deque)
    total: float = 0.0
    total_sq: float = 0.0

    def add(self, x: float) -> None:
        self.values.append(x)
        self.total += x
        self.total_sq += x * x
        if len(self.values) > self.n:
            old = self.values.popleft()
            self.total -= old
            self.total_sq -= old * old
        if len(self.values) == self.n and self.total_sq < 0:
            self.total, self.total_sq = math.fsum(self.values), math.fsum(v * v for v in self.values)

    @property
    def full(self) -> bool:
        return len(self.values) == self.n

    def std(self) -> float:
        k = len(self.values)
        var = (self.total_sq - self.total * self.total / k) / (k - 1) if k > 1 else 0.0
        return math.sqrt(max(var, 0.0))

    def copy(self) -> _RollingStd:
        return _RollingStd(self.n, deque(self.values), self.total, self.total_sq)


@dataclass
class GradeState:
    closes: deque[float] = field(default_factory=lambda: deque(maxlen=366))
    rets20: _RollingStd = field(default_factory=lambda: _RollingStd(20))
    rets365: _RollingStd = field(default_factory=lambda: _RollingStd(365))
    volumes: deque[float] = field(default_factory=lambda: deque(maxlen=21))
    usd_volumes: deque[float] = field(default_factory=lambda: deque(maxlen=30))
    ath: float = 0.0
    regime: str = "neutral"

    def snapshot(self) -> Any:
        return (
            tuple(self.closes),
            tuple(self.volumes),
            tuple(self.usd_volumes),
            self.ath,
            self.regime,
            self.rets20.copy(),
            self.rets365.copy(),
        )

    def restore(self, snap: Any) -> None:
        closes, volumes, usd, self.ath, self.regime, r20, r365 = snap
        self.rets20, self.rets365 = r20.copy(), r365.copy()
        self.closes = deque(closes, maxlen=366)
        self.volumes = deque(volumes, maxlen=21)
        self.usd_volumes = deque(usd, maxlen=30)

    def update(
        self,
        open_: float,
        close: float,
        volume: float,
        ind: dict[str, float | None],
        btc_ret_30d: float | None,
        market_cap: float | None,
        fundamentals: dict[str, float] | None = None,
    ) -> GradeResult:
        if self.closes:
            r = math.log(close / self.closes[-1])
            self.rets20.add(r)
            self.rets365.add(r)
        self.closes.append(close)
        self.volumes.append(volume)
        self.usd_volumes.append(volume * close)
        self.ath = max(self.ath, close)
        closes = self.closes

        def ret(days: int) -> float | None:
            return closes[-1] / closes[-1 - days] - 1 if len(closes) > days else None

        trader: dict[str, float | None] = dict.fromkeys(
            ("rsi", "macd_vs_atr", "trend_alignment", "return_20d_vs_vol", "volume_confirmation", "strength_vs_btc")
        )
        reasons_bull: list[str] = []
        reasons_bear: list[str] = []
        rsi, hist, atr = ind.get("rsi_14"), ind.get("macd_hist"), ind.get("atr_14")
        if rsi is not None:
            trader["rsi"] = rsi
            (reasons_bull if rsi >= 55 else reasons_bear if rsi <= 45 else []).append(f"RSI(14) {rsi:.0f}")
        if hist is not None and atr:
            trader["macd_vs_atr"] = squash(hist / atr, 0.5)
            (reasons_bull if hist > 0 else reasons_bear).append(
                f"MACD histogram {'positive' if hist > 0 else 'negative'}"
            )
        e20, e50, s200 = ind.get("ema_20"), ind.get("ema_50"), ind.get("sma_200")
        if e20 is not None and e50 is not None and s200 is not None:
            checks = [close > e20, e20 > e50, e50 > s200, close > s200]
            trader["trend_alignment"] = 25.0 * sum(checks)
            if all(checks):
                reasons_bull.append("price above EMA20 > EMA50 > SMA200")
            elif not any(checks):
                reasons_bear.append("price below EMA20 < EMA50 < SMA200")
        r20 = ret(20)
        if r20 is not None and self.rets20.full:
            vol20 = self.rets20.std() * math.sqrt(20)
            if vol20 > 0:
                trader["return_20d_vs_vol"] = squash(r20 / vol20, 1.0)
        if len(self.volumes) == 21:
            avg = _mean(list(self.volumes)[:-1])
            if avg > 0:
                ratio = volume / avg
                up = close >= open_
                trader["volume_confirmation"] = squash((ratio - 1) * (1 if up else -1), 1.0)
                if ratio >= 1.5:
                    (reasons_bull if up else reasons_bear).append(
                        f"volume {ratio:.1f}x its 20-day mean on a {'rising' if up else 'falling'} day"
                    )
        r30 = ret(30)
        if r30 is not None and btc_ret_30d is not None:
            rel = r30 - btc_ret_30d
            trader["strength_vs_btc"] = squash(rel, 0.2)
            if abs(rel) >= 0.1:
                (reasons_bull if rel > 0 else reasons_bear).append(f"30-day return {rel * 100:+.0f} pts vs BTC")

        investor: dict[str, float | None] = dict.fromkeys(
            ("trend_200d", "drawdown_from_ath", "return_1y_vs_vol", "liquidity", "market_cap")
        )
        if s200:
            investor["trend_200d"] = squash(close / s200 - 1, 0.3)
        investor["drawdown_from_ath"] = clip01(close / self.ath) if self.ath else None
        r365 = ret(365)
        if r365 is not None and self.rets365.full:
            vol_y = self.rets365.std() * math.sqrt(365)
            if vol_y > 0:
                investor["return_1y_vs_vol"] = squash(r365 / vol_y, 1.0)
        if len(self.usd_volumes) == 30:
            investor["liquidity"] = log_scale(_mean(self.usd_volumes), 1e6, 1e10)
        if market_cap:
            investor["market_cap"] = log_scale(market_cap, 1e8, 1e12)

        # strength vs BTC is published but not averaged: it depends on whether BTC's candle of the
        # same day was processed first, which the bus does not order across symbols
        t_vals = [v for k, v in trader.items() if v is not None and k != "strength_vs_btc"]
        i_vals = [v for v in investor.values() if v is not None]
        # a grade needs most of its components: 4 of 6 for the trader grade, 3 of 5 for the investor grade
        trader_grade = round(_mean(t_vals), 2) if len(t_vals) >= 3 else None
        investor_grade = round(_mean(i_vals), 2) if len(i_vals) >= 3 else None
        components: dict[str, float | None] = {f"trader.{k}": v for k, v in trader.items()}
        components.update({f"investor.{k}": v for k, v in investor.items()})
        fund = fundamental_scores(fundamentals or {}, market_cap)
        for name, value in fund.items():
            components[f"investor.fundamentals.{name}"] = value
        components["investor.fundamentals"] = _mean(list(fund.values())) if fund else None
        if fund:  # supplied fundamentals count as one more investor component
            i_vals.append(components["investor.fundamentals"])  # type: ignore[arg-type]
            investor_grade = round(_mean(i_vals), 2) if len(i_vals) >= 3 else None

        signal = None
        if trader_grade is not None:
            new = next_regime(self.regime, trader_grade)
            if new != self.regime and new != "neutral":
                strength = round(min(1.0, abs(trader_grade - 50) / 50), 4)
                signal = (new, strength, reasons_bull if new == "bullish" else reasons_bear)
            self.regime = new
        return GradeResult(trader_grade, investor_grade, components, signal, r30)
