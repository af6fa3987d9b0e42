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
from dataclasses import dataclass
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


class _RollingStd:
    """Sample standard deviation of the last n values, O(1) per update (re-summed exactly every n)."""

    __slots__ = ("adds", "n", "total", "total_sq", "values")

    def __init__(self, n: int) -> None:
        self.n = n
        self.values: deque[float] = deque()
        self.total = 0.0
        self.total_sq = 0.0
        self.adds = 0

    def add(self, x: float) -> None:
        values = self.values
        values.append(x)
        self.adds += 1
        if len(values) > self.n:
            old = values.popleft()
            self.total += x - old
            self.total_sq += x * x - old * old
            if self.adds % self.n == 0 or self.total_sq < 0:
                self.total, self.total_sq = math.fsum(values), math.fsum([v * v for v in values])
        else:
            self.total += x
            self.total_sq += x * x

    @property
    def full(self) -> bool:
        return len(self.values) == self.n

    def std(self) -> float:
        k = len(self.values)
        var = (self.total_sq - self.total * self.total / k) / (k - 1) if k > 1 else 0.0
        return math.sqrt(var) if var > 0 else 0.0

    def state(self) -> tuple[Any, ...]:
        return tuple(self.values), self.total, self.total_sq, self.adds

    @classmethod
    def from_state(cls, n: int, state: tuple[Any, ...]) -> _RollingStd:
        r = cls(n)
        values, r.total, r.total_sq, r.adds = state
        r.values = deque(values)
        return r


_TRADER_KEYS = ("rsi", "macd_vs_atr", "trend_alignment", "return_20d_vs_vol", "volume_confirmation")
_SQRT20 = math.sqrt(20)
_SQRT365 = math.sqrt(365)
_tanh, _log = math.tanh, math.log


class MomentumState:
    """Short-term momentum of one series: the Trader Grade's components on any interval, and the
    hysteresis regime of the signals. The daily :class:`GradeState` and the intraday
    :class:`IntradayState` share it, so a 1h signal means what a daily one means, on 1h candles."""

    __slots__ = ("_why", "closes", "regime", "rets20", "vadds", "volumes", "vsum")
    KEEP = 21  # closes kept: the 20-candle return needs 21

    def __init__(self) -> None:
        self.closes: deque[float] = deque(maxlen=self.KEEP)
        self.rets20 = _RollingStd(20)
        self.volumes: deque[float] = deque(maxlen=21)
        self.vsum = 0.0  # sum of ``volumes``, re-summed exactly every 21 updates
        self.vadds = 0
        self.regime = "neutral"
        self._why: tuple[Any, ...] = ()

    def _add(self, close: float, volume: float) -> float | None:
        """Append the candle; returns its log return (None on the first candle)."""
        closes = self.closes
        r = None
        if closes:
            r = _log(close) - _log(closes[-1])  # finite for any two positive floats (a ratio can underflow)
            self.rets20.add(r)
        closes.append(close)
        volumes = self.volumes
        if len(volumes) == 21:
            self.vsum -= volumes[0]
        volumes.append(volume)
        self.vsum += volume
        self.vadds += 1
        if self.vadds % 21 == 0:
            self.vsum = math.fsum(volumes)
        return r

    def _trader(self, open_: float, close: float, volume: float, ind: dict[str, float | None]) -> list[float | None]:
        """The five averaged components, in ``_TRADER_KEYS`` order; keeps what the reasons need."""
        rsi, hist, atr = ind["rsi_14"], ind["macd_hist"], ind["atr_14"]
        macd_c = trend = ret_c = vol_c = ratio = None
        if hist is not None and atr:
            macd_c = 50.0 + 50.0 * _tanh(hist / atr / 0.5)
        e20, e50, s200 = ind["ema_20"], ind["ema_50"], ind["sma_200"]
        aligned = 0
        if e20 is not None and e50 is not None and s200 is not None:
            aligned = (close > e20) + (e20 > e50) + (e50 > s200) + (close > s200)
            trend = 25.0 * aligned
        closes = self.closes
        z = None
        if len(closes) > 20 and self.rets20.full:
            vol20 = self.rets20.std() * _SQRT20
            if vol20 > 0:
                z = (close / closes[-21] - 1) / vol20
                ret_c = 50.0 + 50.0 * _tanh(z)
        up = close >= open_
        if len(self.volumes) == 21:
            avg = (self.vsum - volume) / 20
            if avg > 0:
                ratio = volume / avg
                vol_c = 50.0 + 50.0 * _tanh(ratio - 1 if up else 1 - ratio)
        self._why = (rsi, hist if atr else None, aligned if trend is not None else None, ratio, up, z)
        return [rsi, macd_c, trend, ret_c, vol_c]

    def _reasons(self, bullish: bool, unit: str, score: float, rel_btc: float | None = None) -> list[str]:
        """The reasons that agree with the direction, from the candle just scored (never empty: the
        score itself when no single component stands out)."""
        rsi, hist, aligned, ratio, up, z = self._why
        span = "20-day" if unit == "1d" else f"20-candle ({unit})"
        out = []
        if rsi is not None and (rsi >= 55 if bullish else rsi <= 45):
            out.append(f"RSI(14) {rsi:.0f}")
        if hist is not None and (hist > 0) == bullish:
            out.append(f"MACD histogram {'positive' if hist > 0 else 'negative'}")
        if aligned == (4 if bullish else 0):
            out.append("price above EMA20 > EMA50 > SMA200" if bullish else "price below EMA20 < EMA50 < SMA200")
        if z is not None and (z >= 0.5 if bullish else z <= -0.5):
            out.append(f"{span} return {z:+.1f}x its volatility")
        if ratio is not None and ratio >= 1.5 and up == bullish:
            rising = "rising" if up else "falling"
            out.append(
                f"volume {ratio:.1f}x its 20-day mean on a {rising} day"
                if unit == "1d"
                else f"volume {ratio:.1f}x its 20-candle mean on a {rising} {unit} candle"
            )
        if rel_btc is not None and abs(rel_btc) >= 0.1 and (rel_btc > 0) == bullish:
            out.append(f"30-day return {rel_btc * 100:+.0f} pts vs BTC")
        if not out:
            out.append(f"Trader Grade {score:.0f}" if unit == "1d" else f"{unit} momentum score {score:.0f} of 100")
        return out

    def _signal(
        self, score: float | None, unit: str, rel_btc: float | None = None
    ) -> tuple[str, float, list[str]] | None:
        if score is None or score != score:  # undefined (warm-up), or NaN from absurd inputs
            return None
        new = next_regime(self.regime, score)
        signal = None
        if new != self.regime and new != "neutral":
            strength = round(min(1.0, abs(score - 50) / 50), 4)
            signal = (new, strength, self._reasons(new == "bullish", unit, score, rel_btc))
        self.regime = new
        return signal

    def _state(self) -> tuple[Any, ...]:
        return tuple(self.closes), self.rets20.state(), tuple(self.volumes), self.vsum, self.vadds, self.regime

    def _set_state(self, snap: tuple[Any, ...]) -> None:
        closes, r20, volumes, self.vsum, self.vadds, self.regime = snap
        self.closes = deque(closes, maxlen=self.KEEP)
        self.rets20 = _RollingStd.from_state(20, r20)
        self.volumes = deque(volumes, maxlen=21)

    def snapshot(self) -> Any:
        return self._state()

    def restore(self, snap: Any) -> None:
        self._set_state(snap)


class IntradayState(MomentumState):
    """Intraday signals: the Trader Grade's five averaged components on the interval's candles
    (RSI, MACD/ATR, trend alignment, 20-candle return / volatility, volume confirmation), the
    same hysteresis as the daily signals. No grade is published for it (grades are daily)."""

    __slots__ = ()

    def update(
        self, open_: float, close: float, volume: float, ind: dict[str, float | None], unit: str
    ) -> tuple[str, float, list[str]] | None:
        self._add(close, volume)
        vals = [v for v in self._trader(open_, close, volume, ind) if v is not None]
        return self._signal(round(_mean(vals), 2) if len(vals) >= 3 else None, unit)


class GradeState(MomentumState):
    __slots__ = ("ath", "rets365", "usd_sum", "usd_volumes")
    KEEP = 366

    def __init__(self) -> None:
        super().__init__()
        self.rets365 = _RollingStd(365)
        self.usd_volumes: deque[float] = deque(maxlen=30)
        self.usd_sum = 0.0
        self.ath = 0.0

    def snapshot(self) -> Any:
        return self._state(), self.rets365.state(), tuple(self.usd_volumes), self.usd_sum, self.ath

    def restore(self, snap: Any) -> None:
        base, r365, usd, self.usd_sum, self.ath = snap
        self._set_state(base)
        self.rets365 = _RollingStd.from_state(365, r365)
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
        r = self._add(close, volume)
        if r is not None:
            self.rets365.add(r)
        usd = self.usd_volumes
        if len(usd) == 30:
            self.usd_sum -= usd[0]
        usd.append(volume * close)
        self.usd_sum += volume * close
        if self.vadds % 30 == 0:
            self.usd_sum = math.fsum(usd)
        if close > self.ath:
            self.ath = close
        closes = self.closes
        n = len(closes)

        trader_vals = self._trader(open_, close, volume, ind)
        r30 = close / closes[-31] - 1 if n > 30 else None
        rel = strength = None
        if r30 is not None and btc_ret_30d is not None:
            rel = r30 - btc_ret_30d
            strength = 50.0 + 50.0 * _tanh(rel / 0.2)

        s200 = ind["sma_200"]
        trend_200d = 50.0 + 50.0 * _tanh((close / s200 - 1) / 0.3) if s200 else None
        drawdown = clip01(close / self.ath) if self.ath else None
        ret_1y = None
        if n > 365 and self.rets365.full:
            vol_y = self.rets365.std() * _SQRT365
            if vol_y > 0:
                ret_1y = 50.0 + 50.0 * _tanh((close / closes[-366] - 1) / vol_y)
        liquidity = log_scale(self.usd_sum / 30, 1e6, 1e10) if len(usd) == 30 else None
        cap = log_scale(market_cap, 1e8, 1e12) if market_cap else None

        # strength vs BTC is published but not averaged: it depends on whether BTC's candle of the
        # same day was processed first, which the bus does not order across symbols
        t_vals = [v for v in trader_vals if v is not None]
        i_vals = [v for v in (trend_200d, drawdown, ret_1y, liquidity, cap) if v is not None]
        # a grade needs most of its components: 3 of the 5 averaged ones
        trader_grade = round(_mean(t_vals), 2) if len(t_vals) >= 3 else None
        rsi_c, macd_c, trend_c, ret_c, vol_c = trader_vals
        components: dict[str, float | None] = {
            "trader.rsi": rsi_c,
            "trader.macd_vs_atr": macd_c,
            "trader.trend_alignment": trend_c,
            "trader.return_20d_vs_vol": ret_c,
            "trader.volume_confirmation": vol_c,
            "trader.strength_vs_btc": strength,
            "investor.trend_200d": trend_200d,
            "investor.drawdown_from_ath": drawdown,
            "investor.return_1y_vs_vol": ret_1y,
            "investor.liquidity": liquidity,
            "investor.market_cap": cap,
        }
        fund = fundamental_scores(fundamentals, market_cap) if fundamentals else None
        if fund:  # supplied fundamentals count as one more investor component
            for name, value in fund.items():
                components[f"investor.fundamentals.{name}"] = value
            components["investor.fundamentals"] = f = _mean(list(fund.values()))
            i_vals.append(f)
        else:
            components["investor.fundamentals"] = None
        investor_grade = round(_mean(i_vals), 2) if len(i_vals) >= 3 else None
        signal = self._signal(trader_grade, "1d", rel)
        return GradeResult(trader_grade, investor_grade, components, signal, r30)
