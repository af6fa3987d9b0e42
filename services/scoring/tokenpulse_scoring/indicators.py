"""Streaming technical indicators, O(1) per candle, exactly as the public contract defines them.

* EMA(n): alpha = 2/(n+1), seeded by the simple average of the first n closes (TA-Lib's EMA).
* RSI(14): Wilder smoothing (alpha 1/14) of gains and losses, seeded by their simple average
  over the first 14 changes (TA-Lib's RSI); first value on the 15th close.
* MACD = EMA12 - EMA26, each seeded as above; signal = EMA9 of MACD seeded by the average of
  its first 9 values; hist = MACD - signal. (TA-Lib's ``MACD`` function seeds the fast EMA
  later, at the slow EMA's start, so its first values differ; ``EMA(12) - EMA(26)`` matches.)
* Bollinger: SMA20 +- 2 population standard deviations (ddof 0), computed exactly over the
  20-close window each time (no running sum of squares, which loses precision at BTC prices).
* ATR(14): Wilder smoothing of the true range, seeded by the average of the first 14 true
  ranges (the first candle has none); first value on the 15th candle (TA-Lib's ATR).
* SMA200: plain average of the last 200 closes.

A value not defined yet (warm-up) is ``None``. :meth:`IndicatorState.snapshot` /
:meth:`restore` let the caller undo the last candle when a correction of it arrives.
We do not use talipp here: one small state object for the whole set is several times
faster per candle and keeps every seeding rule explicit; TA-Lib checks it in the tests.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tokenpulse_shared.events import INDICATOR_FIELDS

FIELDS = INDICATOR_FIELDS


@dataclass
class _Smoother:
    """Exponential smoothing seeded by the simple average of the first n inputs.

    ``alpha = 2/(n+1)`` is the EMA; ``alpha = 1/n`` is Wilder's average (RSI, ATR)."""

    n: int
    wilder: bool = False
    value: float | None = None
    seed_sum: float = 0.0
    count: int = 0

    def update(self, x: float) -> float | None:
        if self.value is None:
            self.count += 1
            self.seed_sum += x
            if self.count == self.n:
                self.value = self.seed_sum / self.n
            return self.value
        alpha = 1.0 / self.n if self.wilder else 2.0 / (self.n + 1)
        self.value += (x - self.value) * alpha
        return self.value


def _Ema(n: int) -> _Smoother:
    return _Smoother(n)


def _Wilder(n: int) -> _Smoother:
    return _Smoother(n, wilder=True)


@dataclass
class IndicatorState:
    """All contract indicators of one (symbol, interval), fed closed candles in time order."""

    ema12: _Smoother = field(default_factory=lambda: _Ema(12))
    ema26: _Smoother = field(default_factory=lambda: _Ema(26))
    ema20: _Smoother = field(default_factory=lambda: _Ema(20))
    ema50: _Smoother = field(default_factory=lambda: _Ema(50))
    signal: _Smoother = field(default_factory=lambda: _Ema(9))
    gain: _Smoother = field(default_factory=lambda: _Wilder(14))
    loss: _Smoother = field(default_factory=lambda: _Wilder(14))
    atr: _Smoother = field(default_factory=lambda: _Wilder(14))
    window20: deque[float] = field(default_factory=lambda: deque(maxlen=20))
    window200: deque[float] = field(default_factory=lambda: deque(maxlen=200))
    sum200: float = 0.0
    prev_close: float | None = None
    count: int = 0

    def update(self, high: float, low: float, close: float) -> dict[str, float | None]:
        self.count += 1
        out: dict[str, float | None] = dict.fromkeys(FIELDS)
        prev = self.prev_close
        # RSI and ATR need the previous close
        if prev is not None:
            change = close - prev
            g = self.gain.update(change if change > 0 else 0.0)
            lo = self.loss.update(-change if change < 0 else 0.0)
            if g is not None and lo is not None:
                out["rsi_14"] = 100.0 if lo == 0 and g > 0 else 50.0 if lo == 0 else 100.0 - 100.0 / (1.0 + g / lo)
            true_range = max(high - low, abs(high - prev), abs(low - prev))
            out["atr_14"] = self.atr.update(true_range)
        self.prev_close = close
        fast, slow = self.ema12.update(close), self.ema26.update(close)
        if fast is not None and slow is not None:
            macd = fast - slow
            out["macd"] = macd
            sig = self.signal.update(macd)
            if sig is not None:
                out["macd_signal"] = sig
                out["macd_hist"] = macd - sig
        out["ema_20"] = self.ema20.update(close)
        out["ema_50"] = self.ema50.update(close)
        if len(self.window200) == 200:
            self.sum200 -= self.window200[0]
        self.window200.append(close)
        self.sum200 += close
        if len(self.window200) == 200:
            # re-sum exactly now and then so the running sum cannot drift
            if self.count % 1000 == 0:
                self.sum200 = math.fsum(self.window200)
            out["sma_200"] = self.sum200 / 200
        self.window20.append(close)
        if len(self.window20) == 20:
            mean = math.fsum(self.window20) / 20
            sd = math.sqrt(math.fsum((x - mean) ** 2 for x in self.window20) / 20)
            out["bb_middle"], out["bb_upper"], out["bb_lower"] = mean, mean + 2 * sd, mean - 2 * sd
        return out

    def snapshot(self) -> Any:
        """The whole state as plain values (cheap: a few small copies)."""
        small = tuple(copy.copy(getattr(self, n)) for n in _SMALL)
        return small, tuple(self.window20), tuple(self.window200), self.sum200, self.prev_close, self.count

    def restore(self, snap: Any) -> None:
        small, w20, w200, self.sum200, self.prev_close, self.count = snap
        for name, value in zip(_SMALL, small, strict=True):
            setattr(self, name, copy.copy(value))
        self.window20 = deque(w20, maxlen=20)
        self.window200 = deque(w200, maxlen=200)


_SMALL = ("ema12", "ema26", "ema20", "ema50", "signal", "gain", "loss", "atr")
