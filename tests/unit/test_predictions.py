"""Predictions: no look-ahead, conformal coverage, honest selection, registry round trip, events.

Small slices of the bundled history and coarse origin strides keep these fast; the full
backtest is `tokenpulse predictions backtest` (docs/predictions.md).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from tokenpulse_ingest.bundle import iter_bundle
from tokenpulse_scoring.forecast.core import DAY_MS, Series, make_series
from tokenpulse_scoring.forecast.live import Forecaster, to_event
from tokenpulse_scoring.forecast.registry import InsufficientHistory, Predictor, train
from tokenpulse_scoring.forecast.walkforward import BEAT_NAIVE, WalkConfig, day_of, run, select
from tokenpulse_shared.events import Interval, PredictionEvent
from tokenpulse_shared.predictions import HORIZONS, MIN_HISTORY_DAYS
from tokenpulse_shared.settings import Settings

SMALL = WalkConfig(
    eval_start="2018-07-01",
    warm_start="2018-01-01",
    lgbm_refit_days=365,
    lgbm_rounds=30,
    min_calib=20,
    step=5,
)


def bundle_series(symbols: list[str], start: str, end: str) -> list[Series]:
    lo, hi = day_of(start) * DAY_MS, day_of(end) * DAY_MS
    out = []
    for sym, _, bars in iter_bundle(Settings().runtime.bundle_dir, symbols, [Interval.D1], lo, hi):
        out.append(make_series(sym, [(b.ts_ms, b.high, b.low, b.close, b.volume) for b in bars]))
    return sorted(out, key=lambda s: s.symbol)


def perturbed_after(s: Series, day: int, rng: np.random.Generator) -> Series:
    cut = day - s.day0 + 1
    shock = np.ones(len(s.close))
    shock[cut:] = np.exp(np.cumsum(rng.normal(0, 0.2, len(s.close) - cut)))
    volume = s.volume.copy()
    volume[cut:] = rng.permutation(volume[cut:]) * 3
    return Series(s.symbol, s.day0, s.close * shock, s.high * shock, s.low * shock, volume)


def test_changing_the_future_does_not_change_past_forecasts() -> None:
    """Every model, every horizon: forecasts and calibrated intervals made at origins up to a cut-off
    day are identical when every price (and volume) after that day is replaced."""
    series = bundle_series(["BTC", "ETH"], "2016-09-01", "2019-03-01")
    cut = day_of("2018-10-15")
    a = run(series, SMALL)
    b = run([perturbed_after(s, cut, np.random.default_rng(1)) for s in series], SMALL)
    changed_later = 0
    for key, ra in a.results.items():
        rb = b.results[key]
        fr = a.frames[key[1]]
        past = fr.day <= cut
        assert past.sum() > 20
        for name in ("mu", "lo80", "hi80", "lo95", "hi95"):
            np.testing.assert_array_equal(getattr(ra, name)[past], getattr(rb, name)[past], err_msg=f"{key} {name}")
        changed_later += int(np.any(ra.hi95[~past] != rb.hi95[~past]))
    assert changed_later == len(a.results)  # the test would notice a leak: later forecasts do move


def fat_tailed_walks(n_tokens: int, days: int, seed: int) -> list[Series]:
    rng = np.random.default_rng(seed)
    out = []
    day0 = day_of("2016-01-01")
    for i in range(n_tokens):
        vol = 0.03 * np.exp(np.cumsum(rng.normal(0, 0.03, days)))  # drifting volatility regimes
        r = vol * rng.standard_t(3, days) / math.sqrt(3)
        close = 100 * np.exp(np.cumsum(r))
        bars = [((day0 + k) * DAY_MS, c * 1.01, c * 0.99, c, 1000.0) for k, c in enumerate(close)]
        out.append(make_series(f"T{i}", bars))
    return out


def test_conformal_calibration_reaches_nominal_coverage_on_fat_tails() -> None:
    series = fat_tailed_walks(4, 1400, seed=3)
    cfg = WalkConfig(eval_start="2017-01-01", warm_start="2016-05-01", models=("naive",), horizons=("1d", "7d"))
    bt = run(series, cfg)
    for h in ("1d", "7d"):
        m = bt.metrics[("naive", h)]
        assert m["n"] > 1500
        assert 0.75 <= m["coverage"] <= 0.85, m
        assert 0.91 <= m["coverage_95"] <= 0.98, m
        assert m["mase"] == 1.0 and m["directional_accuracy"] is None


def _m(mase: float, cov: float = 0.8, cov95: float = 0.95) -> dict[str, float]:
    return {"mase": mase, "coverage": cov, "coverage_95": cov95}


def test_selection_serves_naive_unless_a_calibrated_model_beats_it() -> None:
    cfg = WalkConfig(models=("naive", "theta", "lgbm"), horizons=("7d",))
    tie = {("naive", "7d"): _m(1.0), ("theta", "7d"): _m(0.995), ("lgbm", "7d"): _m(1.2)}
    got = select("7d", tie, cfg)
    assert got["model"] == "naive" and "no model beat the naive" in got["reason"] and "theta" in got["reason"]
    better = {("naive", "7d"): _m(1.0), ("theta", "7d"): _m(BEAT_NAIVE - 0.01), ("lgbm", "7d"): _m(0.9, cov=0.6)}
    assert select("7d", better, cfg)["model"] == "theta"  # lgbm is more accurate but its bands are off
    both = {("naive", "7d"): _m(1.0), ("theta", "7d"): _m(0.97), ("lgbm", "7d"): _m(0.9)}
    assert select("7d", both, cfg)["model"] == "lgbm"


def test_registry_round_trip_and_inference(tmp_path: Path) -> None:
    series = bundle_series(["BTC", "ETH", "SOL"], "2017-01-01", "2021-01-01")
    cfg = WalkConfig(eval_start="2019-01-01", warm_start="2018-06-01", models=("naive", "theta"), min_calib=20, step=3)
    version, bt = train(series, tmp_path, cfg, now=datetime(2021, 1, 2, tzinfo=UTC))
    assert (tmp_path / "CURRENT").read_text() == version and (tmp_path / version / "metadata.json").exists()
    predictor = Predictor.current(tmp_path)
    assert predictor is not None and predictor.version == version
    assert set(predictor.served) == set(HORIZONS)
    btc = next(s for s in series if s.symbol == "BTC")
    bars = [
        (int(d) * DAY_MS, h, lo, c, v)
        for d, h, lo, c, v in zip(btc.days, btc.high, btc.low, btc.close, btc.volume, strict=True)
    ]
    preds = predictor.predict("BTC", bars)
    assert [p.horizon for p in preds] == list(HORIZONS)
    last_close = bars[-1][3]
    for p in preds:
        assert p.made_at_ms == bars[-1][0] + DAY_MS  # the close of the last daily candle
        assert p.target_ms == p.made_at_ms + HORIZONS[p.horizon] * DAY_MS
        assert p.lower_95 < p.lower <= p.point <= p.upper < p.upper_95
        served = bt.selection[p.horizon]["model"]
        assert p.model.endswith("@" + version) and p.backtest["n"] == bt.per_token[(served, p.horizon, "BTC")]["n"]
        if served == "naive":
            assert p.point == pytest.approx(last_close)
        event = to_event(p)
        assert PredictionEvent.model_validate_json(event.model_dump_json()) == event
    # the intervals widen with the horizon
    widths = [math.log(p.upper / p.lower) for p in preds]
    assert widths == sorted(widths)
    with pytest.raises(InsufficientHistory, match=str(MIN_HISTORY_DAYS)):
        predictor.predict("BTC", bars[: MIN_HISTORY_DAYS - 1])
    with pytest.raises(InsufficientHistory, match="flat days"):  # a recent gap is not read as flat prices
        predictor.predict("BTC", bars[:-60] + bars[-10:])
    # the service retrains when the version is a day old, or when a token reached the minimum history
    fresh, later = datetime(2021, 1, 2, 1, tzinfo=UTC), datetime(2021, 1, 3, 1, tzinfo=UTC)
    same = Forecaster(lambda s: bars, lambda: ["BTC", "ETH"], tmp_path, retrain_hours=24)
    same.predictor = predictor
    assert not same.due(fresh) and same.due(later)
    grown = Forecaster(lambda s: bars[: MIN_HISTORY_DAYS if s == "NEW" else None], lambda: ["BTC", "NEW"], tmp_path)
    grown.predictor = predictor
    assert grown.due(fresh)


def test_prediction_event_rejects_inconsistent_bounds() -> None:
    base = {
        "symbol": "BTC",
        "horizon": "7d",
        "made_at": datetime(2024, 1, 2, tzinfo=UTC),
        "target_ts": datetime(2024, 1, 9, tzinfo=UTC),
        "point": 100.0,
        "lower": 90.0,
        "upper": 110.0,
        "model": "naive-rw@v1",
    }
    PredictionEvent(**base, lower_95=80.0, upper_95=120.0)
    for bad in ({"lower": 101.0}, {"lower_95": 95.0, "upper_95": 120.0}, {"lower_95": 80.0}):
        with pytest.raises(ValueError):
            PredictionEvent(**{**base, **bad})
    with pytest.raises(ValueError):
        PredictionEvent(**{**base, "target_ts": base["made_at"]})
