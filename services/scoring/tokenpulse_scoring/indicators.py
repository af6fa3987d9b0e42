"""Streaming technical indicators, O(1) per candle, exactly as the public contract defines them.

* EMA(n): alpha = 2/(n+1), seeded by the simple average of the first n closes (TA-Lib's EMA).
* RSI(14): Wilder smoothing (alpha 1/14) of gains and losses, seeded by their simple average
  over the first 14 changes (TA-Lib's RSI); first value on the 15th close.
* MACD = EMA12 - EMA26, each seeded as above; signal = EMA9 of MACD seeded by the average of
  its first 9 values; hist = MACD - signal. (TA-Lib's ``MACD`` function seeds the fast EMA
  later, at the slow EMA's start, so its first values differ; ``EMA(12) - EMA(26)`` matches.)
* Bollinger: SMA20 +- 2 population standard deviations (ddof 0). The window's sum and sum of
  squares are kept relative to a reference close near the window's mean (so BTC-sized prices do
  not cancel), and re-summed exactly (``math.fsum``) every 20 candles, so nothing drifts.
* ATR(14): Wilder smoothing of the true range, seeded by the average of the first 14 true
  ranges (the first candle has none); first value on the 15th candle (TA-Lib's ATR).
* SMA200: plain average of the last 200 closes (running sum, re-summed exactly every 1,000).

A value not defined yet (warm-up) is ``None``. :meth:`IndicatorState.snapshot` /
:meth:`restore` let the caller go back to an earlier state when a correction arrives.
We do not use talipp here: one flat state object for the whole set (plain floats, no object
per smoother) is several times faster per candle and keeps every seeding rule explicit; TA-Lib
checks it in the tests. The update is the scoring service's hot path: it is written with
locals and no per-smoother calls on purpose.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from tokenpulse_shared.events import INDICATOR_FIELDS

FIELDS = INDICATOR_FIELDS

_A12, _A26, _A20, _A50, _A9 = 2.0 / 13, 2.0 / 27, 2.0 / 21, 2.0 / 51, 2.0 / 10
_W = 1.0 / 14
_fsum, _sqrt = math.fsum, math.sqrt

# the scalar state, in snapshot order
_SCALARS = (
    "count",
    "prev_close",
    "warm_sum",
    "ema12",
    "ema26",
    "ema20",
    "ema50",
    "sig",
    "sig_sum",
    "sig_n",
    "gain",
    "loss",
    "atr",
    "gain_sum",
    "loss_sum",
    "tr_sum",
    "changes",
    "sum200",
    "k20",
    "s1",
    "s2",
)


class IndicatorState:
    """All contract indicators of one (symbol, interval), fed closed candles in time order."""

    __slots__ = (*_SCALARS, "window20", "window200")

    def __init__(self) -> None:
        self.count = 0
        self.prev_close: float | None = None
        self.warm_sum = 0.0  # sum of the first closes, while an EMA is still seeding
        self.ema12: float | None = None
        self.ema26: float | None = None
        self.ema20: float | None = None
        self.ema50: float | None = None
        self.sig: float | None = None
        self.sig_sum = 0.0
        self.sig_n = 0
        self.gain: float | None = None
        self.loss: float | None = None
        self.atr: float | None = None
        self.gain_sum = 0.0
        self.loss_sum = 0.0
        self.tr_sum = 0.0
        self.changes = 0
        self.sum200 = 0.0
        self.k20 = 0.0  # Bollinger reference close; s1, s2: sum and sum of squares of (close - k20)
        self.s1 = 0.0
        self.s2 = 0.0
        self.window20: deque[float] = deque(maxlen=20)
        self.window200: deque[float] = deque(maxlen=200)

    def update(self, high: float, low: float, close: float) -> dict[str, float | None]:
        count = self.count = self.count + 1
        prev = self.prev_close
        self.prev_close = close
        rsi, atr = self._rsi_atr(high, low, close, prev) if prev is not None else (None, None)
        e20, e50, macd, sig, hist = self._emas_macd(close, count)
        sma = self._sma200(close, count)
        bbu, bbm, bbl = self._bollinger(close, count)
        return {
            "rsi_14": rsi,
            "macd": macd,
            "macd_signal": sig,
            "macd_hist": hist,
            "ema_20": e20,
            "ema_50": e50,
            "sma_200": sma,
            "bb_upper": bbu,
            "bb_middle": bbm,
            "bb_lower": bbl,
            "atr_14": atr,
        }

    def _rsi_atr(self, high: float, low: float, close: float, prev: float) -> tuple[float | None, float | None]:
        """RSI(14) and ATR(14), Wilder-smoothed after the mean of their first 14 changes."""
        rsi = atr = None
        change = close - prev
        up = change if change > 0 else 0.0
        down = -change if change < 0 else 0.0
        tr = high - low
        a, b = high - prev, low - prev
        if a < 0:
            a = -a
        if b < 0:
            b = -b
        if a > tr:
            tr = a
        if b > tr:
            tr = b
        g = self.gain
        if g is None:
            n = self.changes = self.changes + 1
            self.gain_sum += up
            self.loss_sum += down
            self.tr_sum += tr
            if n == 14:
                g = self.gain = self.gain_sum / 14
                lo = self.loss = self.loss_sum / 14
                atr = self.atr = self.tr_sum / 14
        else:
            g = self.gain = g + (up - g) * _W
            lo = self.loss = self.loss + (down - self.loss) * _W  # type: ignore[operator]
            atr = self.atr = self.atr + (tr - self.atr) * _W  # type: ignore[operator]
        if g is not None:
            rsi = (100.0 if g > 0 else 50.0) if lo == 0 else 100.0 - 100.0 / (1.0 + g / lo)
        return rsi, atr

    def _emas_macd(self, close: float, count: int) -> tuple[float | None, ...]:
        """EMA 20 and 50, MACD(12, 26, 9): each EMA seeded by the mean of its first n closes."""
        macd = sig = hist = None
        e12, e26, e20, e50 = self.ema12, self.ema26, self.ema20, self.ema50
        if e50 is None:
            ws = self.warm_sum = self.warm_sum + close
            e12 = self.ema12 = ws / 12 if count == 12 else None if e12 is None else e12 + (close - e12) * _A12
            e20 = self.ema20 = ws / 20 if count == 20 else None if e20 is None else e20 + (close - e20) * _A20
            e26 = self.ema26 = ws / 26 if count == 26 else None if e26 is None else e26 + (close - e26) * _A26
            e50 = self.ema50 = ws / 50 if count == 50 else None
        else:
            e12 = self.ema12 = e12 + (close - e12) * _A12  # type: ignore[operator]
            e20 = self.ema20 = e20 + (close - e20) * _A20  # type: ignore[operator]
            e26 = self.ema26 = e26 + (close - e26) * _A26  # type: ignore[operator]
            e50 = self.ema50 = e50 + (close - e50) * _A50
        if e26 is not None:
            macd = e12 - e26  # type: ignore[operator]
            sig = self.sig
            if sig is None:
                n = self.sig_n = self.sig_n + 1
                self.sig_sum += macd
                if n == 9:
                    sig = self.sig = self.sig_sum / 9
            else:
                sig = self.sig = sig + (macd - sig) * _A9
            if sig is not None:
                hist = macd - sig
        return e20, e50, macd, sig, hist

    def _sma200(self, close: float, count: int) -> float | None:
        w200 = self.window200
        if len(w200) == 200:
            self.sum200 -= w200[0]
            w200.append(close)
            self.sum200 += close
            if count % 1000 == 0:  # re-sum exactly now and then so the running sum cannot drift
                self.sum200 = _fsum(w200)
            return self.sum200 / 200
        w200.append(close)
        self.sum200 += close
        return self.sum200 / 200 if len(w200) == 200 else None

    def _bollinger(self, close: float, count: int) -> tuple[float | None, float | None, float | None]:
        """Bollinger(20, 2) as (upper, middle, lower), from running sums around a reference close."""
        w20 = self.window20
        if len(w20) == 20:
            d = w20[0] - self.k20
            self.s1 -= d
            self.s2 -= d * d
        w20.append(close)
        d = close - self.k20
        s1 = self.s1 = self.s1 + d
        s2 = self.s2 = self.s2 + d * d
        if len(w20) < 20:
            return None, None, None
        if count % 20 == 0:  # re-sum exactly around the window's mean
            k = self.k20 = _fsum(w20) / 20
            s1 = self.s1 = _fsum([x - k for x in w20])
            s2 = self.s2 = _fsum([(x - k) * (x - k) for x in w20])
        m1 = s1 / 20
        var = s2 / 20 - m1 * m1
        sd = _sqrt(var) if var > 0 else 0.0
        bbm = self.k20 + m1
        return bbm + 2 * sd, bbm, bbm - 2 * sd

    def snapshot(self) -> Any:
        """The whole state as plain values (equal snapshots = identical state)."""
        return tuple(getattr(self, n) for n in _SCALARS), tuple(self.window20), tuple(self.window200)

    def restore(self, snap: Any) -> None:
        scalars, w20, w200 = snap
        for name, value in zip(_SCALARS, scalars, strict=True):
            setattr(self, name, value)
        self.window20 = deque(w20, maxlen=20)
        self.window200 = deque(w200, maxlen=200)
