"""Streaming indicators match TA-Lib on real history (within 1e-6 relative after warm-up)."""

from __future__ import annotations

import numpy as np
import pytest
import talib
from tokenpulse_ingest.bundle import iter_bundle
from tokenpulse_scoring.indicators import FIELDS, IndicatorState
from tokenpulse_shared.events import Interval
from tokenpulse_shared.settings import DEFAULT_BUNDLE


def series(symbol: str, interval: Interval) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bars = next(b for s, i, b in iter_bundle(DEFAULT_BUNDLE, [symbol], [interval]))
    return (np.array([b.high for b in bars]), np.array([b.low for b in bars]), np.array([b.close for b in bars]))


def reference(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> dict[str, np.ndarray]:
    ema12, ema26 = talib.EMA(close, 12), talib.EMA(close, 26)
    macd = ema12 - ema26
    signal = np.full_like(macd, np.nan)
    start = int(np.argmax(~np.isnan(macd)))
    signal[start:] = talib.EMA(macd[start:], 9)
    upper, middle, lower = talib.BBANDS(close, 20, 2.0, 2.0, matype=0)
    return {
        "rsi_14": talib.RSI(close, 14),
        "macd": macd,
        "macd_signal": signal,
        "macd_hist": macd - signal,
        "ema_20": talib.EMA(close, 20),
        "ema_50": talib.EMA(close, 50),
        "sma_200": talib.SMA(close, 200),
        "bb_upper": upper,
        "bb_middle": middle,
        "bb_lower": lower,
        "atr_14": talib.ATR(high, low, close, 14),
    }


@pytest.mark.parametrize(
    ("symbol", "interval"), [("BTC", Interval.D1), ("ETH", Interval.D1), ("DOGE", Interval.D1), ("BTC", Interval.H1)]
)
def test_streaming_indicators_match_talib(symbol: str, interval: Interval) -> None:
    high, low, close = series(symbol, interval)
    state = IndicatorState()
    got = [state.update(h, lo, c) for h, lo, c in zip(high, low, close, strict=True)]
    want = reference(high, low, close)
    for name in FIELDS:
        ours = np.array([np.nan if g[name] is None else g[name] for g in got])
        theirs = want[name]
        # the same warm-up: defined from the same candle on
        assert int(np.argmax(~np.isnan(ours))) == int(np.argmax(~np.isnan(theirs))), name
        mask = ~np.isnan(theirs)
        np.testing.assert_allclose(
            ours[mask], theirs[mask], rtol=1e-6, atol=1e-9 * np.nanmax(np.abs(theirs)), err_msg=name
        )


def test_snapshot_and_restore_undo_the_last_candle() -> None:
    high, low, close = series("BTC", Interval.D1)
    a, b = IndicatorState(), IndicatorState()
    for h, lo, c in zip(high[:300], low[:300], close[:300], strict=True):
        a.update(h, lo, c)
        b.update(h, lo, c)
    snap = b.snapshot()
    b.update(1.0, 0.5, 0.75)  # a bad print ...
    b.restore(snap)  # ... corrected: undo it
    assert b.update(high[300], low[300], close[300]) == a.update(high[300], low[300], close[300])
