"""Walk-forward evaluation, conformal calibration and model selection.

For every origin day ``t`` each model forecasts with what was known at the close of ``t``
(features and statistical fits from data up to ``t``; LightGBM refit every
``lgbm_refit_days`` on rows whose target was already realised). Intervals are then
calibrated by split conformal prediction (CQR, Romano et al. 2019) with volatility-normalised
scores ``max(lo - y, y - hi) / scale`` pooled over tokens from the ``calib_days`` before ``t``
whose target had been realised by ``t``; the calibrated interval is ``[lo - q*scale, hi + q*scale]``
with ``q`` the ``ceil((n+1)(1-alpha))/n`` empirical quantile. Metrics are taken on origins from
``eval_start`` on, the same origins for every model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from tokenpulse_shared.predictions import HORIZONS, MIN_HISTORY_DAYS

from tokenpulse_scoring.forecast.core import (
    DAY_MS,
    LGBM_ROUNDS,
    MODELS,
    Forecast,
    LgbmQuantiles,
    Series,
    btc_columns,
    full_features,
    lgbm_fit,
    naive_forecast,
    scale_of,
    stat_walk,
    targets,
)

Progress = Callable[[str, int, int], None]
# A model "beats naive" when its MASE is at most this: a 1% lower absolute error over the walk's
# forecasts, not a tie decided by noise.
BEAT_NAIVE = 0.99


def day_of(iso: str) -> int:
    return int(datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp() * 1000) // DAY_MS


@dataclass(frozen=True)
class WalkConfig:
    eval_start: str = "2018-01-01"  # metrics from here on
    warm_start: str = "2017-01-01"  # forecasts from here on (the conformal window fills meanwhile)
    lgbm_refit_days: int = 365
    lgbm_rounds: int = LGBM_ROUNDS
    calib_days: int = 730
    min_calib: int = 100
    min_history: int = MIN_HISTORY_DAYS
    step: int = 1  # origin stride (tests use a coarser one)
    models: tuple[str, ...] = MODELS
    horizons: tuple[str, ...] = tuple(HORIZONS)
    coverage_targets: dict[float, tuple[float, float]] = field(
        default_factory=lambda: {0.8: (0.75, 0.85), 0.95: (0.91, 0.98)}
    )


@dataclass
class Frame:
    """Every origin of one horizon over all tokens, in one order shared by all models."""

    h: int
    sym: np.ndarray  # token index
    t: np.ndarray  # origin index within the token's series
    day: np.ndarray  # epoch day of the origin
    y: np.ndarray  # realised log return (NaN: not yet known)
    scale: np.ndarray


@dataclass
class Calibrated:
    mu: np.ndarray
    lo80: np.ndarray
    hi80: np.ndarray
    lo95: np.ndarray
    hi95: np.ndarray
    n_cal: np.ndarray
    q80: float  # the quantiles to use for a forecast made after the last day
    q95: float
    n_cal_last: int


@dataclass
class Backtest:
    config: WalkConfig
    symbols: list[str]
    frames: dict[str, Frame]
    results: dict[tuple[str, str], Calibrated]  # (model, horizon)
    metrics: dict[tuple[str, str], dict[str, Any]]  # pooled
    per_token: dict[tuple[str, str, str], dict[str, Any]]  # (model, horizon, symbol)
    selection: dict[str, dict[str, Any]]  # horizon -> {model, reason}
    lgbm_last: dict[str, LgbmQuantiles] = field(default_factory=dict)


def conformal_scores(y: np.ndarray, lo: np.ndarray, hi: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.maximum(lo - y, y - hi) / scale


def rolling_quantile(
    day: np.ndarray, scores: np.ndarray, h: int, level: float, window: int, min_n: int, at_days: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each day in ``at_days``: the conformal quantile of scores of origins ``o`` with
    ``at - h - window < o <= at - h`` (realised by ``at``). NaN where fewer than ``min_n``."""
    ok = ~np.isnan(scores)
    d, sc = day[ok], scores[ok]
    order = np.argsort(d, kind="stable")
    d, sc = d[order], sc[order]
    uniq = np.unique(at_days)
    qs = np.full(len(uniq), np.nan)
    ns = np.zeros(len(uniq), dtype=np.int64)
    lo_i = np.searchsorted(d, uniq - h - window, side="right")
    hi_i = np.searchsorted(d, uniq - h, side="right")
    for k in range(len(uniq)):
        win = sc[lo_i[k] : hi_i[k]]
        n = len(win)
        ns[k] = n
        if n >= min_n:
            rank = min(n, math.ceil((n + 1) * level))
            qs[k] = np.partition(win, rank - 1)[rank - 1]
    pos = np.searchsorted(uniq, at_days)
    return qs[pos], ns[pos]


def calibrate(frame: Frame, fc: Forecast, cfg: WalkConfig, last_day: int) -> Calibrated:
    s = frame.scale
    out: dict[str, np.ndarray] = {}
    qlast: dict[float, float] = {}
    n_cal = np.zeros(len(frame.day), dtype=np.int64)
    n_last = 0
    for level, lo, hi in ((0.8, fc.lo80, fc.hi80), (0.95, fc.lo95, fc.hi95)):
        scores = conformal_scores(frame.y, lo, hi, s)
        q, n_cal = rolling_quantile(frame.day, scores, frame.h, level, cfg.calib_days, cfg.min_calib, frame.day)
        ql, nl = rolling_quantile(
            frame.day, scores, frame.h, level, cfg.calib_days, cfg.min_calib, np.array([last_day])
        )
        qlast[level], n_last = float(ql[0]), int(nl[0])
        new_lo, new_hi = lo - q * s, hi + q * s
        # a negative q narrows the band; it never crosses the point
        out[f"lo{int(level * 100)}"] = np.minimum(new_lo, fc.mu)
        out[f"hi{int(level * 100)}"] = np.maximum(new_hi, fc.mu)
    lo95 = np.minimum(out["lo95"], out["lo80"])
    hi95 = np.maximum(out["hi95"], out["hi80"])
    return Calibrated(fc.mu, out["lo80"], out["hi80"], lo95, hi95, n_cal, qlast[0.8], qlast[0.95], n_last)


def pinball(y: np.ndarray, q: np.ndarray, tau: float) -> np.ndarray:
    d = y - q
    return np.maximum(tau * d, (tau - 1) * d)


def metrics(y: np.ndarray, c: Calibrated, mask: np.ndarray, naive_abs: np.ndarray, model: str) -> dict[str, Any]:
    yy = y[mask]
    n = int(mask.sum())
    if n == 0:
        return {"n": 0, "mase": None, "coverage": None, "coverage_95": None}
    mu, lo80, hi80, lo95, hi95 = (a[mask] for a in (c.mu, c.lo80, c.hi80, c.lo95, c.hi95))
    denom = float(naive_abs[mask].sum())
    err = np.abs(yy - mu)
    pin = np.mean(
        [pinball(yy, q, tau).mean() for q, tau in ((lo95, 0.025), (lo80, 0.1), (mu, 0.5), (hi80, 0.9), (hi95, 0.975))]
    )
    moving = mu != 0
    return {
        "n": n,
        "mase": round(float(err.sum()) / denom, 4) if denom > 0 else None,
        "mae_pct": round(float(err.mean()) * 100, 3),
        "directional_accuracy": (
            round(float(np.mean(np.sign(mu[moving]) == np.sign(yy[moving]))), 4)
            if model != "naive" and moving.any()
            else None
        ),
        "pinball_pct": round(float(pin) * 100, 4),
        "coverage": round(float(np.mean((yy >= lo80) & (yy <= hi80))), 4),
        "coverage_95": round(float(np.mean((yy >= lo95) & (yy <= hi95))), 4),
        "width80_pct": round(float(np.mean(np.exp(hi80) - np.exp(lo80))) * 100, 2),
    }


def origins(s: Series, cfg: WalkConfig) -> np.ndarray:
    first = max(cfg.min_history - 1, day_of(cfg.warm_start) - s.day0)
    if first >= len(s.close):
        return np.empty(0, dtype=np.int64)
    # align the stride on absolute days so every token shares the same origin days
    start_day = s.day0 + first
    start_day += (-start_day) % cfg.step
    return np.arange(start_day - s.day0, len(s.close), cfg.step, dtype=np.int64)


def lgbm_walk(
    series: list[Series],
    feats: list[np.ndarray],
    frames: dict[str, Frame],
    cfg: WalkConfig,
    progress: Progress | None = None,
) -> tuple[dict[str, Forecast], dict[str, LgbmQuantiles]]:
    """Refit at anchored dates on rows realised by then; forecast the origins until the next refit."""
    out: dict[str, Forecast] = {}
    last: dict[str, LgbmQuantiles] = {}
    last_day = max(s.day0 + len(s.close) - 1 for s in series)
    refits = list(range(day_of(cfg.warm_start), last_day + 1, cfg.lgbm_refit_days))
    done = 0
    for hname in cfg.horizons:
        h = HORIZONS[hname]
        fr = frames[hname]
        # every training row: each token's days with a realised target (daily, whatever the stride)
        xs, zs, ds = [], [], []
        for s, f in zip(series, feats, strict=True):
            y = targets(s, h)
            t = np.arange(30, len(s.close))
            t = t[~np.isnan(y[t])]
            xs.append(f[t])
            zs.append(y[t] / scale_of(s, t, h))
            ds.append(s.day0 + t)
        x_all, z_all, d_all = np.vstack(xs), np.concatenate(zs), np.concatenate(ds)
        z_all = np.clip(z_all, -8, 8)
        fx = np.vstack([feats[i][t] for i, t in zip(fr.sym, fr.t, strict=True)]) if len(fr.t) else None
        mu = np.zeros(len(fr.t))
        bounds = np.zeros((len(fr.t), 4))
        model = None
        for k, r in enumerate(refits):
            train = d_all + h <= r
            if train.sum() >= 500:
                model = lgbm_fit(x_all[train], z_all[train], cfg.lgbm_rounds)
            sel = (fr.day >= r) & (fr.day < (refits[k + 1] if k + 1 < len(refits) else last_day + 1))
            if model is not None and sel.any() and fx is not None:
                pf = model.predict(fx[sel], fr.scale[sel], fr.t[sel])
                mu[sel] = pf.mu
                bounds[sel] = np.column_stack([pf.lo80, pf.hi80, pf.lo95, pf.hi95])
            elif sel.any():  # not enough realised rows yet: fall back to the naive band
                nf = naive_forecast_scale(fr.scale[sel], fr.t[sel])
                mu[sel] = nf.mu
                bounds[sel] = np.column_stack([nf.lo80, nf.hi80, nf.lo95, nf.hi95])
            done += 1
            if progress:
                progress("lgbm", done, len(refits) * len(cfg.horizons))
        out[hname] = Forecast(fr.t, mu, bounds[:, 0], bounds[:, 1], bounds[:, 2], bounds[:, 3])
        if model is not None:
            last[hname] = model
    return out, last


def naive_forecast_scale(scale: np.ndarray, t: np.ndarray) -> Forecast:
    from tokenpulse_scoring.forecast.core import vol_band

    return vol_band(t, np.zeros(len(t)), scale)


def run(series_list: Sequence[Series], cfg: WalkConfig | None = None, progress: Progress | None = None) -> Backtest:
    cfg = cfg or WalkConfig()
    series = [s for s in series_list if len(s.close) >= cfg.min_history]
    symbols = [s.symbol for s in series]
    btc = next((s for s in series if s.symbol == "BTC"), None)
    bcols = btc_columns(btc)
    feats = [full_features(s, bcols) for s in series]
    last_day = max(s.day0 + len(s.close) - 1 for s in series)
    frames: dict[str, Frame] = {}
    per_t = [origins(s, cfg) for s in series]
    for hname in cfg.horizons:
        h = HORIZONS[hname]
        sym = np.concatenate([np.full(len(t), i) for i, t in enumerate(per_t)]).astype(np.int64)
        t = np.concatenate(per_t).astype(np.int64)
        day = np.concatenate([s.day0 + tt for s, tt in zip(series, per_t, strict=True)]).astype(np.int64)
        y = np.concatenate([targets(s, h)[tt] for s, tt in zip(series, per_t, strict=True)])
        scale = np.concatenate([scale_of(s, tt, h) for s, tt in zip(series, per_t, strict=True)])
        frames[hname] = Frame(h, sym, t, day, y, scale)

    raw: dict[tuple[str, str], Forecast] = {}
    lgbm_last: dict[str, LgbmQuantiles] = {}
    total_tokens = len(series)
    for model in cfg.models:
        if model == "naive":
            for hname in cfg.horizons:
                fr = frames[hname]
                parts = [naive_forecast(series[i], per_t[i], fr.h) for i in range(total_tokens)]
                raw[(model, hname)] = _concat(parts)
        elif model in ("ets", "theta"):
            hs = [HORIZONS[h] for h in cfg.horizons]
            per_token = []
            for i, s in enumerate(series):
                per_token.append(stat_walk(model, s, per_t[i], hs))
                if progress:
                    progress(model, i + 1, total_tokens)
            for hname in cfg.horizons:
                raw[(model, hname)] = _concat([pt[HORIZONS[hname]] for pt in per_token])
        elif model == "lgbm":
            fcs, lgbm_last = lgbm_walk(series, feats, frames, cfg, progress)
            for hname, fc in fcs.items():
                raw[(model, hname)] = fc
        else:
            raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")

    results = {key: calibrate(frames[key[1]], fc, cfg, last_day) for key, fc in raw.items()}
    eval_day = day_of(cfg.eval_start)
    metrics_out: dict[tuple[str, str], dict[str, Any]] = {}
    per_token_out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for hname in cfg.horizons:
        fr = frames[hname]
        base = (fr.day >= eval_day) & ~np.isnan(fr.y)
        for model in cfg.models:
            c = results[(model, hname)]
            base &= c.n_cal >= cfg.min_calib
        naive_abs = np.abs(fr.y)
        for model in cfg.models:
            c = results[(model, hname)]
            metrics_out[(model, hname)] = metrics(fr.y, c, base, naive_abs, model)
            for i, sym_name in enumerate(symbols):
                per_token_out[(model, hname, sym_name)] = metrics(fr.y, c, base & (fr.sym == i), naive_abs, model)
    selection = {h: select(h, metrics_out, cfg) for h in cfg.horizons}
    return Backtest(cfg, symbols, frames, results, metrics_out, per_token_out, selection, lgbm_last)


def select(hname: str, m: dict[tuple[str, str], dict[str, Any]], cfg: WalkConfig) -> dict[str, Any]:
    """The model with the lowest MASE among those that beat naive (MASE <= ``BEAT_NAIVE``) with
    calibrated intervals inside the coverage targets; else naive, saying so."""
    (lo80, hi80), (lo95, hi95) = cfg.coverage_targets[0.8], cfg.coverage_targets[0.95]
    candidates = []
    for model in cfg.models:
        r = m[(model, hname)]
        if model == "naive" or r["mase"] is None or r["coverage"] is None:
            continue
        calibrated = lo80 <= r["coverage"] <= hi80 and lo95 <= r["coverage_95"] <= hi95
        if r["mase"] <= BEAT_NAIVE and calibrated:
            candidates.append((r["mase"], model))
    if candidates:
        mase, model = min(candidates)
        return {
            "model": model,
            "reason": f"lowest walk-forward MASE ({mase:.4f} <= {BEAT_NAIVE}; naive = 1) with calibrated bands",
        }
    others = sorted(
        (m[(model, hname)]["mase"], model)
        for model in cfg.models
        if model != "naive" and m[(model, hname)]["mase"] is not None
    )
    why = f"no model beat the naive random walk out of sample (MASE <= {BEAT_NAIVE} with calibrated bands)"
    if others:
        why += f"; best other: {others[0][1]}, MASE {others[0][0]:.4f}"
    return {"model": "naive", "reason": why + "; serving naive"}


def _concat(parts: list[Forecast]) -> Forecast:
    return Forecast(
        *(np.concatenate([getattr(p, k) for p in parts]) for k in ("t", "mu", "lo80", "hi80", "lo95", "hi95"))
    )
