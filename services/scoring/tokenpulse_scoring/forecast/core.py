"""Daily series, features and the forecasting models (all in log-return space).

Every model answers, for a token at the close of day ``t`` and a horizon ``h`` in days, the
log return ``y = log(close[t+h] / close[t])``: a point (``mu``) and raw 80%/95% bounds.
``scale`` = EWMA daily volatility x sqrt(h) normalises the conformal scores, so intervals
widen and narrow with the market. Nothing here reads a value after ``t``.

Models
* ``naive``: random walk; point = today's close, volatility bands.
* ``ets``, ``theta``: statsforecast's AutoETS and Theta on the log close (refit every
  ``STAT_REFIT_DAYS`` on the last two years, applied to each day's history with ``forward``).
* ``lgbm``: LightGBM quantile regression (2.5/10/50/90/97.5%) of the volatility-scaled return,
  pooled over tokens, on returns, volatility, RSI, trend, drawdown, volume and BTC regime.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tokenpulse_shared.timeutil import DAY_MS

Z80 = 1.2815515655446004
Z95 = 1.959963984540054
QUANTILES = (0.025, 0.1, 0.5, 0.9, 0.975)
MODELS = ("naive", "ets", "theta", "lgbm")
MODEL_LABELS = {
    "naive": "naive-rw",
    "ets": "ets",
    "theta": "theta",
    "lgbm": "lgbm-quantile",
}
STAT_REFIT_DAYS = 30
STAT_WINDOW = 730
STAT_FORWARD = 365
VOL_HALFLIFE = 20.0


@dataclass
class Series:
    """One token's daily bars on a gapless day grid (a missing day repeats the previous close)."""

    symbol: str
    day0: int  # epoch day of the first bar
    close: np.ndarray
    high: np.ndarray
    low: np.ndarray
    volume: np.ndarray
    log_close: np.ndarray = field(init=False)
    sigma: np.ndarray = field(init=False)  # EWMA daily volatility known at the close of each day

    def __post_init__(self) -> None:
        self.log_close = np.log(self.close)
        self.sigma = ewma_vol(self.log_close)

    @property
    def days(self) -> np.ndarray:
        return self.day0 + np.arange(len(self.close))

    def last_ms(self) -> int:
        return (self.day0 + len(self.close) - 1) * DAY_MS


def make_series(symbol: str, bars: Sequence[tuple[int, float, float, float, float]]) -> Series:
    """``bars`` = (ts_ms, high, low, close, volume), ascending daily open times."""
    if not bars:
        raise ValueError(f"{symbol}: no daily bars")
    days = np.array([b[0] // DAY_MS for b in bars], dtype=np.int64)
    day0 = int(days[0])
    n = int(days[-1]) - day0 + 1
    idx = days - day0
    cols = []
    for k in (1, 2, 3, 4):
        full = np.full(n, np.nan)
        full[idx] = [b[k] for b in bars]
        cols.append(full)
    high, low, close, volume = cols
    # forward-fill the (rare) missing days: the close repeats, the range is flat, no volume
    missing = np.isnan(close)
    if missing.any():
        last = np.maximum.accumulate(np.where(missing, 0, np.arange(n)))
        close = close[last]
        high = np.where(missing, close, high)
        low = np.where(missing, close, low)
        volume = np.where(missing, 0.0, volume)
    return Series(symbol, day0, close, high, low, np.nan_to_num(volume))


def ewma_vol(log_close: np.ndarray, halflife: float = VOL_HALFLIFE) -> np.ndarray:
    r = np.diff(log_close, prepend=log_close[:1])
    lam = 0.5 ** (1.0 / halflife)
    out = np.empty_like(r)
    seed = float(np.mean(r[1:21] ** 2)) if len(r) > 2 else 1e-4
    var = seed if seed > 0 else 1e-4
    for i, x in enumerate(r):
        if i > 0:
            var = lam * var + (1 - lam) * x * x
        out[i] = math.sqrt(max(var, 1e-8))
    return out


# --- features ------------------------------------------------------------------------------

FEATURES = (
    "r1",
    "r3",
    "r7",
    "r14",
    "r30",
    "r90",
    "vol7",
    "vol30",
    "vol90",
    "vol_ratio",
    "sigma",
    "rsi14",
    "dist_sma50",
    "dist_sma200",
    "drawdown365",
    "range14",
    "volume_ratio",
    "btc_r30",
    "btc_vol30",
    "btc_dist_sma200",
)


def _lag_diff(x: np.ndarray, k: int) -> np.ndarray:
    out = np.full_like(x, np.nan)
    if len(x) > k:
        out[k:] = x[k:] - x[:-k]
    return out


def _rolling(x: np.ndarray, w: int, fn: str) -> np.ndarray:
    out = np.full_like(x, np.nan, dtype=float)
    if len(x) < w:
        return out
    view = np.lib.stride_tricks.sliding_window_view(x, w)
    out[w - 1 :] = getattr(np, fn)(view, axis=1)
    return out


def _rsi(log_close: np.ndarray, n: int = 14) -> np.ndarray:
    close = np.exp(log_close)
    d = np.diff(close, prepend=close[:1])
    up, down = np.clip(d, 0, None), np.clip(-d, 0, None)
    out = np.full_like(close, np.nan)
    if len(close) <= n:
        return out
    au, ad = up[1 : n + 1].mean(), down[1 : n + 1].mean()
    for i in range(n, len(close)):
        if i > n:
            au = (au * (n - 1) + up[i]) / n
            ad = (ad * (n - 1) + down[i]) / n
        out[i] = 100.0 if ad == 0 else 100.0 - 100.0 / (1.0 + au / ad)
    return out


def token_features(s: Series) -> np.ndarray:
    """Per-day feature rows (without the BTC columns), shape (len, len(FEATURES) - 3)."""
    lc = s.log_close
    r = np.diff(lc, prepend=lc[:1])
    vol7, vol30, vol90 = (_rolling(r, w, "std") for w in (7, 30, 90))
    sma50 = _rolling(s.close, 50, "mean")
    sma200 = _rolling(s.close, 200, "mean")
    hi365 = np.maximum.accumulate(s.close) if len(s.close) < 365 else _rolling(s.close, 365, "max")
    if len(s.close) >= 365:
        hi365[:364] = np.maximum.accumulate(s.close[:364])
    rng = np.log(np.maximum(s.high, s.low) / np.maximum(np.minimum(s.low, s.high), 1e-12))
    vlog = np.log1p(s.volume)
    cols = [
        *(_lag_diff(lc, k) for k in (1, 3, 7, 14, 30, 90)),
        vol7,
        vol30,
        vol90,
        vol7 / np.where(vol90 > 0, vol90, np.nan),
        s.sigma,
        _rsi(lc),
        lc - np.log(sma50),
        lc - np.log(sma200),
        lc - np.log(hi365),
        _rolling(rng, 14, "mean"),
        _rolling(vlog, 7, "mean") - _rolling(vlog, 90, "mean"),
    ]
    return np.column_stack(cols)


def btc_columns(btc: Series | None) -> tuple[int, np.ndarray]:
    """(day0, rows of btc_r30, btc_vol30, btc_dist_sma200) for aligning the BTC regime by day."""
    if btc is None:
        return 0, np.empty((0, 3))
    f = token_features(btc)
    names = FEATURES[:-3]
    pick = [names.index("r30"), names.index("vol30"), names.index("dist_sma200")]
    return btc.day0, f[:, pick]


def full_features(s: Series, btc: tuple[int, np.ndarray]) -> np.ndarray:
    own = token_features(s)
    b0, bcols = btc
    aligned = np.full((len(s.close), 3), np.nan)
    if len(bcols):
        days = s.days
        j = days - b0
        ok = (j >= 0) & (j < len(bcols))
        aligned[ok] = bcols[j[ok]]
    return np.column_stack([own, aligned])


# --- models ----------------------------------------------------------------------------------


@dataclass
class Forecast:
    """Raw forecasts of one model at one horizon for origins ``t`` (indices into a series)."""

    t: np.ndarray  # origin indices
    mu: np.ndarray  # point, log return
    lo80: np.ndarray
    hi80: np.ndarray
    lo95: np.ndarray
    hi95: np.ndarray


def vol_band(t: np.ndarray, mu: np.ndarray, scale: np.ndarray) -> Forecast:
    return Forecast(t, mu, mu - Z80 * scale, mu + Z80 * scale, mu - Z95 * scale, mu + Z95 * scale)


def scale_of(s: Series, t: np.ndarray, h: int) -> np.ndarray:
    return s.sigma[t] * math.sqrt(h)


def naive_forecast(s: Series, t: np.ndarray, h: int) -> Forecast:
    return vol_band(t, np.zeros(len(t)), scale_of(s, t, h))


def _stat_model(kind: str) -> Any:
    from statsforecast.models import AutoETS, Theta

    return AutoETS(model="ZZN") if kind == "ets" else Theta()


def stat_fit(kind: str, log_close: np.ndarray) -> Any:
    return _stat_model(kind).fit(np.ascontiguousarray(log_close[-STAT_WINDOW:], dtype=np.float64))


def stat_point(fitted: Any, log_close: np.ndarray, horizons: Sequence[int]) -> list[float]:
    """Log-return points at ``horizons`` from a fitted model applied to the history ``log_close``."""
    y = np.ascontiguousarray(log_close[-STAT_FORWARD:], dtype=np.float64)
    mean = fitted.forward(y=y, h=max(horizons))["mean"]
    return [float(mean[h - 1] - y[-1]) for h in horizons]


def stat_walk(kind: str, s: Series, t: np.ndarray, horizons: Sequence[int]) -> dict[int, Forecast]:
    """Walk-forward: refit every ``STAT_REFIT_DAYS`` on data up to the origin, forward every day."""
    mus = np.zeros((len(t), len(horizons)))
    fitted = None
    fitted_at = -(10**9)
    for k, ti in enumerate(t):
        hist = s.log_close[: ti + 1]
        if fitted is None or ti - fitted_at >= STAT_REFIT_DAYS:
            try:
                fitted = stat_fit(kind, hist)
                fitted_at = int(ti)
            except Exception:  # a degenerate window (flat prices): keep the previous fit
                if fitted is None:
                    continue
        try:
            mus[k] = stat_point(fitted, hist, horizons)
        except Exception:
            mus[k] = 0.0
    return {h: vol_band(t, mus[:, j], scale_of(s, t, h)) for j, h in enumerate(horizons)}


@dataclass
class LgbmQuantiles:
    """One booster per quantile for one horizon; predicts volatility-scaled returns."""

    boosters: list[Any]

    def predict(self, x: np.ndarray, scale: np.ndarray, t: np.ndarray) -> Forecast:
        q = np.column_stack([b.predict(x, num_threads=1) for b in self.boosters])
        q = np.sort(q, axis=1) * scale[:, None]  # no crossing
        return Forecast(t, q[:, 2], q[:, 1], q[:, 3], q[:, 0], q[:, 4])


LGBM_PARAMS = {
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 200,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "verbose": -1,
    "num_threads": 1,  # OpenMP threads spin when the 2 cores are shared: one thread is faster here
    "seed": 7,
    "deterministic": True,
    "force_row_wise": True,
}
LGBM_ROUNDS = 100


def lgbm_fit(x: np.ndarray, z: np.ndarray, rounds: int = LGBM_ROUNDS) -> LgbmQuantiles:
    import lightgbm as lgb

    boosters = []
    for q in QUANTILES:
        params = {**LGBM_PARAMS, "objective": "quantile", "alpha": q}
        data = lgb.Dataset(x, z, feature_name=list(FEATURES), free_raw_data=True)
        boosters.append(lgb.train(params, data, num_boost_round=rounds))
    return LgbmQuantiles(boosters)


def lgbm_load(texts: list[str]) -> LgbmQuantiles:
    import lightgbm as lgb

    return LgbmQuantiles([lgb.Booster(model_str=t) for t in texts])


def targets(s: Series, h: int) -> np.ndarray:
    """y[t] = log(close[t+h]/close[t]); NaN where t+h is not known yet."""
    y = np.full(len(s.log_close), np.nan)
    if len(y) > h:
        y[:-h] = s.log_close[h:] - s.log_close[:-h]
    return y
