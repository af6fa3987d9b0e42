"""``tokenpulse predictions backtest|train``: the published walk-forward backtest and the registry.

``backtest`` runs every model over the bundled daily history (all tokens, every horizon),
prints the tables published in docs/predictions.md, and writes the figures as JSON and a
PNG plot of forecasts against what happened. ``train`` writes a registry version from the
bundled history (the service retrains from the stored candles by itself).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from tokenpulse_ingest.bundle import iter_bundle
from tokenpulse_scoring.forecast.core import DAY_MS, MODELS, Series, make_series
from tokenpulse_scoring.forecast.walkforward import Backtest, WalkConfig, day_of, run
from tokenpulse_shared.events import Interval
from tokenpulse_shared.predictions import HORIZONS

from tokenpulse.config import console, load_settings

app = typer.Typer(help="Price predictions: walk-forward backtest and model registry.", no_args_is_help=True)
REPO = Path(__file__).resolve().parents[1]


def load_series(bundle_dir: Path, symbols: list[str] | None = None) -> list[Series]:
    return [
        make_series(sym, [(b.ts_ms, b.high, b.low, b.close, b.volume) for b in bars])
        for sym, _, bars in iter_bundle(bundle_dir, symbols, [Interval.D1])
    ]


class _Bar:
    """A rich progress bar with one task per model."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, label: str, done: int, of: int) -> None:
        if label not in self.tasks:
            self.tasks[label] = self.progress.add_task(label, total=of)
        self.progress.update(self.tasks[label], completed=done, total=of)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "—"
    if pct:
        return f"{v * 100:.1f}%"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def markdown(bt: Backtest) -> str:
    lines = ["| horizon | model | n | MASE vs naive | MAE % | directional acc. | pinball % | 80% cover | 95% cover |"]
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for h in bt.config.horizons:
        served = bt.selection[h]["model"]
        for m in bt.config.models:
            r = bt.metrics[(m, h)]
            name = f"**{m}** (served)" if m == served else m
            lines.append(
                f"| {h} | {name} | {r['n']} | {_fmt(r['mase'])} | {_fmt(r['mae_pct'])} | "
                f"{_fmt(r['directional_accuracy'], True)} | {_fmt(r['pinball_pct'])} | "
                f"{_fmt(r['coverage'], True)} | {_fmt(r['coverage_95'], True)} |"
            )
    lines.append("")
    lines.append("| horizon | served | why |")
    lines.append("|---|---|---|")
    for h in bt.config.horizons:
        lines.append(f"| {h} | {bt.selection[h]['model']} | {bt.selection[h]['reason']} |")
    lines.append("")
    lines.append("Per token, served model (MASE / 80% cover / 95% cover / n):")
    lines.append("")
    lines.append("| token | " + " | ".join(bt.config.horizons) + " |")
    lines.append("|---|" + "---|" * len(bt.config.horizons))
    for sym in bt.symbols:
        cells = []
        for h in bt.config.horizons:
            r = bt.per_token[(bt.selection[h]["model"], h, sym)]
            cells.append(f"{_fmt(r['mase'])} / {_fmt(r['coverage'], True)} / {_fmt(r['coverage_95'], True)} / {r['n']}")
        lines.append(f"| {sym} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(bt: Backtest, out: Console) -> None:
    t = Table(title="Walk-forward backtest (out of sample, calibrated intervals)")
    for col in ("horizon", "model", "n", "MASE", "MAE %", "dir. acc.", "pinball %", "80% cover", "95% cover"):
        t.add_column(col)
    for h in bt.config.horizons:
        for m in bt.config.models:
            r = bt.metrics[(m, h)]
            served = "*" if bt.selection[h]["model"] == m else ""
            t.add_row(
                h,
                m + served,
                str(r["n"]),
                _fmt(r["mase"]),
                _fmt(r["mae_pct"]),
                _fmt(r["directional_accuracy"], True),
                _fmt(r["pinball_pct"]),
                _fmt(r["coverage"], True),
                _fmt(r["coverage_95"], True),
            )
    out.print(t)
    for h in bt.config.horizons:
        out.print(f"{h}: serving [bold]{bt.selection[h]['model']}[/bold] — {bt.selection[h]['reason']}")


def to_json(bt: Backtest, elapsed_s: float) -> dict[str, Any]:
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed_s, 1),
        "config": {
            "eval_start": bt.config.eval_start,
            "warm_start": bt.config.warm_start,
            "lgbm_refit_days": bt.config.lgbm_refit_days,
            "calib_days": bt.config.calib_days,
            "step": bt.config.step,
            "models": list(bt.config.models),
        },
        "symbols": bt.symbols,
        "selection": bt.selection,
        "metrics": {f"{m}|{h}": v for (m, h), v in bt.metrics.items()},
        "per_token": {f"{m}|{h}|{s}": v for (m, h, s), v in bt.per_token.items()},
    }


def plot(bt: Backtest, series: list[Series], path: Path, symbol: str = "BTC", days: int = 730) -> None:
    """Forecasts (served model, calibrated 80%/95% bands) against the realised close, one panel per
    horizon, for ``symbol`` over the last ``days`` days of realised targets; plus rolling coverage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    by_sym = {s.symbol: s for s in series}
    s = by_sym[symbol]
    i = bt.symbols.index(symbol)
    fig, axes = plt.subplots(len(bt.config.horizons) + 1, 1, figsize=(11, 3.2 * (len(bt.config.horizons) + 1)))
    for ax, h in zip(axes, bt.config.horizons, strict=False):
        fr = bt.frames[h]
        c = bt.results[(bt.selection[h]["model"], h)]
        sel = (fr.sym == i) & ~np.isnan(fr.y)
        last = fr.day[sel].max()
        sel &= fr.day > last - days
        t = fr.t[sel]
        base = s.close[t]
        target_days = fr.day[sel] + fr.h
        when = [datetime.fromtimestamp(d * DAY_MS / 1000, UTC) for d in target_days]
        ax.fill_between(when, base * np.exp(c.lo95[sel]), base * np.exp(c.hi95[sel]), color="#c6dbef", label="95%")
        ax.fill_between(when, base * np.exp(c.lo80[sel]), base * np.exp(c.hi80[sel]), color="#6baed6", label="80%")
        ax.plot(when, base * np.exp(c.mu[sel]), color="#08519c", lw=0.8, label="point forecast")
        ax.plot(when, base * np.exp(fr.y[sel]), color="black", lw=1.0, label="realised")
        ax.set_yscale("log")
        m = bt.per_token[(bt.selection[h]["model"], h, symbol)]
        ax.set_title(
            f"{symbol} {h} ahead — {bt.selection[h]['model']} (walk-forward, plotted at the target date); "
            f"80% cover {m['coverage']:.1%}, 95% cover {m['coverage_95']:.1%}, MASE {m['mase']:.3f}",
            fontsize=9,
        )
        ax.legend(loc="upper left", fontsize=7)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m"))
    ax = axes[-1]
    for h in bt.config.horizons:
        fr = bt.frames[h]
        c = bt.results[(bt.selection[h]["model"], h)]
        ok = ~np.isnan(fr.y) & (c.n_cal >= bt.config.min_calib) & (fr.day >= day_of(bt.config.eval_start))
        hit = ((fr.y >= c.lo80) & (fr.y <= c.hi80))[ok].astype(float)
        days_ok = fr.day[ok]
        order = np.argsort(days_ok, kind="stable")
        uniq, start = np.unique(days_ok[order], return_index=True)
        daily = np.add.reduceat(hit[order], start) / np.diff(np.append(start, len(order)))
        roll = np.convolve(daily, np.ones(180) / 180, mode="valid")
        when = [datetime.fromtimestamp(d * DAY_MS / 1000, UTC) for d in uniq[179:]]
        ax.plot(when, roll, lw=1, label=f"{h}")
    ax.axhspan(0.75, 0.85, color="#e5f5e0", label="target 75-85%")
    ax.axhline(0.8, color="grey", lw=0.5)
    ax.set_ylim(0.4, 1.0)
    ax.set_title("80% interval coverage, all tokens, rolling 180 origin days (served models)", fontsize=9)
    ax.legend(loc="lower left", fontsize=7, ncol=4)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


@app.command()
def backtest(
    models: Annotated[str, typer.Option(help="Comma-separated models to compare.")] = ",".join(MODELS),
    symbols: Annotated[str | None, typer.Option(help="Comma-separated tokens (default: all bundled).")] = None,
    step: Annotated[int, typer.Option(min=1, help="Days between forecast origins (1 = every day).")] = 1,
    json_out: Annotated[Path, typer.Option("--json", help="Write the figures here.")] = REPO / "docs/predictions.json",
    png: Annotated[Path, typer.Option(help="Write the forecast-vs-realised plot here.")] = REPO
    / "docs/predictions.png",
    plot_symbol: Annotated[str, typer.Option(help="Token shown in the plot.")] = "BTC",
) -> None:
    """Walk-forward backtest of every model on the bundled daily history (2018 onward, all tokens,
    1d/7d/30d): MASE vs naive, directional accuracy, pinball loss, 80%/95% coverage; the plot and JSON."""
    settings = load_settings()
    wanted = [m.strip() for m in models.split(",") if m.strip()]
    unknown = sorted(set(wanted) - set(MODELS))
    if unknown:
        console.print(f"[red]unknown model {', '.join(unknown)}[/red]: choose from {', '.join(MODELS)}")
        raise typer.Exit(2)
    if "naive" not in wanted:
        wanted.insert(0, "naive")  # MASE is measured against it
    syms = [s.strip().upper() for s in symbols.split(",")] if symbols else None
    series = load_series(settings.runtime.bundle_dir, syms)
    if not series:
        console.print("[red]no daily history found[/red] for those symbols in the bundle")
        raise typer.Exit(2)
    t0 = time.perf_counter()
    with _progress() as progress:
        bt = run(series, WalkConfig(models=tuple(wanted), step=step), _Bar(progress))
    elapsed = time.perf_counter() - t0
    render(bt, Console())
    print(markdown(bt))
    json_out.write_text(json.dumps(to_json(bt, elapsed), indent=1) + "\n")
    console.print(f"wrote {json_out}")
    if plot_symbol.upper() in bt.symbols:
        plot(bt, series, png, plot_symbol.upper())
        console.print(f"wrote {png}")
    console.print(f"backtest took {elapsed:.0f}s")


@app.command()
def train(
    data_dir: Annotated[Path | None, typer.Option(help="Registry under DATA_DIR/models/predictions.")] = None,
) -> None:
    """Write a registry version from the bundled history (walk-forward, selection, final fits)."""
    from tokenpulse_scoring.forecast.registry import default_root
    from tokenpulse_scoring.forecast.registry import train as train_registry

    settings = load_settings(store={"data_dir": data_dir.resolve() if data_dir else None})
    series = load_series(settings.runtime.bundle_dir, settings.runtime.symbols)
    t0 = time.perf_counter()
    with _progress() as progress:
        version, bt = train_registry(series, default_root(settings.store.data_dir), progress=_Bar(progress))
    for h in HORIZONS:
        console.print(f"{h}: {bt.selection[h]['model']} — {bt.selection[h]['reason']}")
    console.print(
        f"wrote version {version} in {time.perf_counter() - t0:.0f}s under {default_root(settings.store.data_dir)}"
    )
