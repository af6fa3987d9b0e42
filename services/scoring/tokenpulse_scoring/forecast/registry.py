"""The model registry (versioned artifacts + metadata) and inference.

Layout under ``DATA_DIR/models/predictions``::

    CURRENT                      the served version (written last, atomically)
    v20260628T0115Z/metadata.json selection, walk-forward records, conformal quantiles, config
    v20260628T0115Z/lgbm-7d-q0.1.txt, ...      LightGBM boosters (native text format)
    v20260628T0115Z/ets-BTC.pkl, ...           fitted statsforecast models (pickled; written by us only)

A retrain (:func:`train`) runs the whole walk-forward, selects per horizon, fits the served
models on all the data and writes a new version; older versions are kept (the newest
``KEEP`` of them). Inference (:class:`Predictor`) turns a token's daily bars into forecasts
with the served model and the conformal quantiles measured at training time.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tokenpulse_shared.predictions import HORIZONS, MIN_HISTORY_DAYS

from tokenpulse_scoring.forecast.core import (
    DAY_MS,
    FEATURES,
    LGBM_PARAMS,
    MODEL_LABELS,
    QUANTILES,
    LgbmQuantiles,
    Series,
    btc_columns,
    full_features,
    lgbm_load,
    make_series,
    naive_forecast,
    stat_fit,
    stat_point,
    vol_band,
)
from tokenpulse_scoring.forecast.walkforward import Backtest, Progress, WalkConfig, run

KEEP = 5
HISTORY_DAYS = 365  # walk-forward forecasts kept with a version, published once as past forecasts
INFER_DAYS = 500  # bars used at inference: every feature and the volatility estimate settle well within this
RECENT_DAYS, MAX_RECENT_GAPS = 90, 5  # a forecast needs the recent history nearly complete
Bars = Sequence[tuple[int, float, float, float, float]]  # ts_ms, high, low, close, volume


class InsufficientHistory(ValueError):
    pass


@dataclass(frozen=True)
class Prediction:
    symbol: str
    horizon: str
    made_at_ms: int
    target_ms: int
    point: float
    lower: float
    upper: float
    lower_95: float
    upper_95: float
    model: str
    backtest: dict[str, float | int | None]
    kind: str = "live"


def default_root(data_dir: Path) -> Path:
    return data_dir / "models" / "predictions"


def _version(now: datetime) -> str:
    return now.strftime("v%Y%m%dT%H%M%SZ")


def train(
    series: Sequence[Series],
    root: Path,
    cfg: WalkConfig | None = None,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> tuple[str, Backtest]:
    """Walk-forward, select, fit the served models on everything, write a new version."""
    cfg = cfg or WalkConfig()
    now = now or datetime.now(UTC)
    bt = run(series, cfg, progress)
    version = _version(now)
    tmp = root / f".{version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    served = {h: bt.selection[h]["model"] for h in cfg.horizons}
    by_symbol = {s.symbol: s for s in series if s.symbol in bt.symbols}
    for kind in sorted({m for m in served.values() if m in ("ets", "theta")}):
        for sym, s in by_symbol.items():
            with open(tmp / f"{kind}-{sym}.pkl", "wb") as fh:
                pickle.dump(stat_fit(kind, s.log_close), fh)
    for h, model in served.items():
        if model == "lgbm" and h in bt.lgbm_last:
            # the walk-forward's last refit saw the rows realised up to its date; refit on all of them now
            final = _lgbm_final(list(by_symbol.values()), HORIZONS[h], cfg.lgbm_rounds)
            for q, booster in zip(QUANTILES, final.boosters, strict=True):
                booster.save_model(str(tmp / f"lgbm-{h}-q{q}.txt"))
    last_day = max(s.day0 + len(s.close) - 1 for s in series)
    meta = {
        "version": version,
        "created_at": now.isoformat(),
        "data_through": datetime.fromtimestamp(last_day * DAY_MS / 1000, UTC).date().isoformat(),
        "symbols": bt.symbols,
        "config": {
            "eval_start": cfg.eval_start,
            "warm_start": cfg.warm_start,
            "lgbm_refit_days": cfg.lgbm_refit_days,
            "calib_days": cfg.calib_days,
            "min_calib": cfg.min_calib,
            "min_history": cfg.min_history,
            "step": cfg.step,
            "models": list(cfg.models),
            "lgbm": {"params": LGBM_PARAMS, "rounds": cfg.lgbm_rounds, "quantiles": QUANTILES, "features": FEATURES},
        },
        "selection": bt.selection,
        "calibration": {
            f"{m}|{h}": {"q80": c.q80, "q95": c.q95, "n": c.n_cal_last} for (m, h), c in bt.results.items()
        },
        "metrics": {f"{m}|{h}": v for (m, h), v in bt.metrics.items()},
        "per_token": {f"{m}|{h}|{s}": v for (m, h, s), v in bt.per_token.items()},
    }
    (tmp / "metadata.json").write_text(json.dumps(meta, indent=1, default=_jsonable))
    (tmp / "history.json").write_text(json.dumps(_history(bt, by_symbol, last_day)))
    final_dir = root / version
    shutil.rmtree(final_dir, ignore_errors=True)
    tmp.rename(final_dir)
    pointer = root / ".CURRENT.tmp"
    pointer.write_text(version)
    os.replace(pointer, root / "CURRENT")
    for old in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("v"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return version, bt


def _history(bt: Backtest, by_symbol: dict[str, Series], last_day: int) -> list[list[Any]]:
    """The served models' walk-forward forecasts of the last ``HISTORY_DAYS`` whose target is known:
    [symbol, horizon, made_at_ms, target_ms, point, lower, upper, lower_95, upper_95] in prices."""
    rows: list[list[Any]] = []
    for h in bt.config.horizons:
        fr = bt.frames[h]
        c = bt.results[(bt.selection[h]["model"], h)]
        ok = ~np.isnan(fr.y) & (fr.day > last_day - HISTORY_DAYS) & ~np.isnan(c.lo80) & ~np.isnan(c.lo95)
        for k in np.flatnonzero(ok):
            sym = bt.symbols[int(fr.sym[k])]
            close = float(by_symbol[sym].close[int(fr.t[k])])
            made = (int(fr.day[k]) + 1) * DAY_MS
            bounds = [close * math.exp(float(a[k])) for a in (c.mu, c.lo80, c.hi80, c.lo95, c.hi95)]
            rows.append([sym, h, made, made + fr.h * DAY_MS, *bounds])
    return rows


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"not JSON: {type(value)}")


def _lgbm_final(series: list[Series], h: int, rounds: int) -> LgbmQuantiles:
    from tokenpulse_scoring.forecast.core import lgbm_fit, scale_of, targets

    btc = btc_columns(next((s for s in series if s.symbol == "BTC"), None))
    xs, zs = [], []
    for s in series:
        f = full_features(s, btc)
        y = targets(s, h)
        t = np.arange(30, len(s.close))
        t = t[~np.isnan(y[t])]
        xs.append(f[t])
        zs.append(y[t] / scale_of(s, t, h))
    return lgbm_fit(np.vstack(xs), np.clip(np.concatenate(zs), -8, 8), rounds)


class Predictor:
    """Inference with one registry version."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.meta: dict[str, Any] = json.loads((path / "metadata.json").read_text())
        self.version: str = self.meta["version"]
        self.served: dict[str, str] = {h: v["model"] for h, v in self.meta["selection"].items()}
        self._stat: dict[tuple[str, str], Any] = {}
        self._lgbm: dict[str, LgbmQuantiles] = {}
        for h, model in self.served.items():
            if model == "lgbm":
                texts = [(path / f"lgbm-{h}-q{q}.txt").read_text() for q in QUANTILES]
                self._lgbm[h] = lgbm_load(texts)
            elif model in ("ets", "theta"):
                for f in path.glob(f"{model}-*.pkl"):
                    with open(f, "rb") as fh:
                        self._stat[(model, f.stem.split("-", 1)[1])] = pickle.load(
                            fh
                        )  # our own artifacts, written by train()

    @classmethod
    def current(cls, root: Path) -> Predictor | None:
        pointer = root / "CURRENT"
        if not pointer.exists():
            return None
        path = root / pointer.read_text().strip()
        return cls(path) if (path / "metadata.json").exists() else None

    @property
    def created_at(self) -> datetime:
        return datetime.fromisoformat(self.meta["created_at"])

    def label(self, horizon: str) -> str:
        return f"{MODEL_LABELS[self.served[horizon]]}@{self.version}"

    def record(self, horizon: str, symbol: str) -> dict[str, float | int | None]:
        model = self.served[horizon]
        r = self.meta["per_token"].get(f"{model}|{horizon}|{symbol}") or {"n": 0}
        keep = ("mase", "coverage", "coverage_95", "n", "pinball_pct", "directional_accuracy")
        return {k: r.get(k) for k in keep}

    def walk_forward(self) -> list[Prediction]:
        """The served models' walk-forward forecasts (last year, targets known) as past forecasts."""
        path = self.path / "history.json"
        if not path.exists():
            return []
        return [
            Prediction(sym, h, made, target, p, lo, hi, lo95, hi95, self.label(h), self.record(h, sym), "walk-forward")
            for sym, h, made, target, p, lo, hi, lo95, hi95 in json.loads(path.read_text())
        ]

    def predict(self, symbol: str, bars: Bars, btc_bars: Bars | None = None) -> list[Prediction]:
        """Forecasts at every horizon from the close of the last bar; raises InsufficientHistory."""
        if len(bars) < MIN_HISTORY_DAYS:
            raise InsufficientHistory(
                f"{symbol} has {len(bars)} daily candles; forecasts need at least {MIN_HISTORY_DAYS}"
            )
        recent = [b for b in bars[-RECENT_DAYS:] if b[0] > bars[-1][0] - RECENT_DAYS * DAY_MS]
        if RECENT_DAYS - len(recent) > MAX_RECENT_GAPS:
            raise InsufficientHistory(
                f"{symbol} has {len(recent)} daily candles in the {RECENT_DAYS} days before its last one; forecasts "
                f"need at least {RECENT_DAYS - MAX_RECENT_GAPS} (a gap would be read as {RECENT_DAYS - len(recent)} "
                "flat days)"
            )
        s = make_series(symbol, bars[-INFER_DAYS:])
        t = np.array([len(s.close) - 1])
        made_at = (s.day0 + len(s.close)) * DAY_MS  # the close of the last daily candle
        btc = None
        feats = None
        out = []
        for horizon, model in self.served.items():
            h = HORIZONS[horizon]
            scale = s.sigma[t] * math.sqrt(h)
            if model == "lgbm":
                if feats is None:
                    if btc_bars is None and symbol == "BTC":
                        btc_bars = bars
                    btc = make_series("BTC", btc_bars[-INFER_DAYS:]) if btc_bars else None
                    feats = full_features(s, btc_columns(btc))
                fc = self._lgbm[horizon].predict(feats[t], scale, t)
            elif model in ("ets", "theta"):
                fitted = self._stat.get((model, symbol))
                if fitted is None:  # a token the registry has not seen: fit now
                    fitted = self._stat[(model, symbol)] = stat_fit(model, s.log_close)
                fc = vol_band(t, np.array(stat_point(fitted, s.log_close, [h])), scale)
            else:
                fc = naive_forecast(s, t, h)
            cal = self.meta["calibration"][f"{model}|{horizon}"]
            q80 = cal["q80"] if cal["q80"] is not None else 0.0
            q95 = cal["q95"] if cal["q95"] is not None else 0.0
            sc = float(scale[0])
            point = float(fc.mu[0])
            lo80: float = min(float(fc.lo80[0]) - q80 * sc, point)
            hi80: float = max(float(fc.hi80[0]) + q80 * sc, point)
            lo95: float = min(float(fc.lo95[0]) - q95 * sc, lo80)
            hi95: float = max(float(fc.hi95[0]) + q95 * sc, hi80)
            c = float(s.close[-1])
            out.append(
                Prediction(
                    symbol,
                    horizon,
                    made_at,
                    made_at + h * DAY_MS,
                    c * math.exp(point),
                    c * math.exp(lo80),
                    c * math.exp(hi80),
                    c * math.exp(lo95),
                    c * math.exp(hi95),
                    self.label(horizon),
                    self.record(horizon, symbol),
                )
            )
        return out
