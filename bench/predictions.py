"""Benchmark of the predictions (issue #5): `python -m bench.predictions` (also run by `make bench`).

1. Full retrain of all bundled tokens x horizons, as the scoring service's daily retrain does it:
   the walk-forward of every model (naive, ETS, Theta, LightGBM; 2017 onward, every day),
   conformal calibration, selection, final fits, registry write. Split by stage.
2. Inference latency per token-horizon, from a token's daily bars to calibrated prices, for the
   served model and for each model forced as the served one (so the cost of serving a learned
   model is known even while naive is served).

Prints Markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tokenpulse_ingest.bundle import iter_bundle
from tokenpulse_scoring.forecast.core import MODELS, QUANTILES, make_series, stat_fit
from tokenpulse_scoring.forecast.registry import Predictor, _lgbm_final, train
from tokenpulse_shared.events import Interval
from tokenpulse_shared.predictions import HORIZONS
from tokenpulse_shared.settings import Settings

from bench import plot

REPS = int(os.environ.get("BENCH_PRED_REPS", "200"))


def load() -> tuple[list[Any], dict[str, list[tuple[int, float, float, float, float]]]]:
    raw = {
        sym: [(b.ts_ms, b.high, b.low, b.close, b.volume) for b in bars]
        for sym, _, bars in iter_bundle(Settings().runtime.bundle_dir, None, [Interval.D1])
    }
    return [make_series(sym, bars) for sym, bars in raw.items()], raw


def latency(pred: Predictor, raw: dict[str, list[tuple[int, float, float, float, float]]]) -> list[float]:
    """Milliseconds per token-horizon, one sample per token (median of REPS calls)."""
    out = []
    for sym, bars in raw.items():
        btc = raw["BTC"] if sym != "BTC" else None
        pred.predict(sym, bars, btc)  # warm (lazy imports, first-call costs)
        times = []
        for _ in range(REPS):
            t0 = time.perf_counter()
            pred.predict(sym, bars, btc)
            times.append(time.perf_counter() - t0)
        out.append(statistics.median(times) * 1000 / len(HORIZONS))
    return out


def forced(base: Path, model: str, series: list[Any], work: Path) -> Predictor:
    """A copy of a registry version that serves ``model`` at every horizon, with its artifacts."""
    dst = work / f"forced-{model}"
    shutil.copytree(base, dst)
    meta = json.loads((dst / "metadata.json").read_text())
    meta["selection"] = {h: {"model": model, "reason": "benchmark"} for h in HORIZONS}
    (dst / "metadata.json").write_text(json.dumps(meta))
    if model in ("ets", "theta"):
        import pickle

        for s in series:
            with open(dst / f"{model}-{s.symbol}.pkl", "wb") as fh:
                pickle.dump(stat_fit(model, s.log_close), fh)
    if model == "lgbm":
        for h, days in HORIZONS.items():
            final = _lgbm_final(series, days, meta["config"]["lgbm"]["rounds"])
            for q, booster in zip(QUANTILES, final.boosters, strict=True):
                booster.save_model(str(dst / f"lgbm-{h}-q{q}.txt"))
    return Predictor(dst)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="tokenpulse-bench-pred-"))
    try:
        series, raw = load()
        stages: dict[str, float] = {}
        last = [time.perf_counter()]

        def progress(label: str, done: int, of: int) -> None:
            now = time.perf_counter()
            stages[label] = stages.get(label, 0.0) + now - last[0]
            last[0] = now

        t0 = time.perf_counter()
        last[0] = t0
        version, bt = train(series, work / "registry", progress=progress)
        total = time.perf_counter() - t0
        print(
            f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}\n"
        )
        rows = sum(len(s.close) for s in series)
        print(f"Full retrain, {len(series)} tokens x {len(HORIZONS)} horizons, {rows:,} daily bars, models {MODELS}:")
        served_txt = ", ".join(f"{h}={v['model']}" for h, v in bt.selection.items())
        print(f"**{total:.1f} s** (served: {served_txt})\n")
        print("| retrain stage | s |\n|---|---|")
        for label, sec in stages.items():
            print(f"| {label} walk-forward | {sec:.1f} |")
        print(f"| naive, calibration, metrics, final fits, registry write | {total - sum(stages.values()):.1f} |")
        print(f"\n| inference per token-horizon ({REPS} calls per token, median) | median ms | max ms |\n|---|---|---|")
        served = Predictor(work / "registry" / version)
        ms = latency(served, raw)
        served_name = f"served ({', '.join(sorted(set(served.served.values())))})"
        inference = {served_name: {"median": statistics.median(ms), "max": max(ms)}}
        print(
            f"| served version ({', '.join(sorted(set(served.served.values())))}) | "
            f"{statistics.median(ms):.3f} | {max(ms):.3f} |"
        )
        for model in MODELS:
            p = forced(work / "registry" / version, model, series, work)
            ms = latency(p, raw)
            inference[f"{model} forced"] = {"median": statistics.median(ms), "max": max(ms)}
            print(f"| {model} forced at every horizon | {statistics.median(ms):.3f} | {max(ms):.3f} |")
        retrain = {f"{label} walk-forward": sec for label, sec in stages.items()}
        retrain["naive, calibration, metrics, final fits, registry write"] = total - sum(stages.values())
        plot.save(
            "predictions",
            f"Predictions: full retrain {total:.1f} s ({len(series)} tokens x {len(HORIZONS)} horizons), inference",
            [
                plot.bars("retrain, by stage", retrain, "s", fmt="{:.1f}"),
                plot.groups(
                    f"inference per token-horizon ({REPS} calls per token)", inference, "ms", log=True, fmt="{:.2f}"
                ),
            ],
            footer=plot.footer(),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
