"""``tokenpulse track-record``: replay the bundled daily history through scoring and measure it."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from tokenpulse_gateway.analytics.track_record import SignalPoint, SignalRecord, TrackRecordReport, track_record
from tokenpulse_ingest.bundle import iter_bundle
from tokenpulse_scoring.service import ScoringService
from tokenpulse_shared.events import Interval

from tokenpulse.tables import maybe, right_aligned


def replay(
    bundle_dir: Path, symbols: list[str], intraday: tuple[Interval, ...] = (Interval.H1, Interval.H4)
) -> TrackRecordReport:
    series = {s: bars for s, _, bars in iter_bundle(bundle_dir, symbols, [Interval.D1])}
    order = sorted(series, key=lambda s: (s != "BTC", s))  # BTC first, as a replay publishes it
    scoring = ScoringService()
    closes: dict[str, list[tuple[int, float]]] = {}
    trader: dict[str, dict[int, float]] = {}
    investor: dict[str, dict[int, float]] = {}
    signals: list[SignalPoint] = []
    for symbol in order:
        closes[symbol] = [(b.ts_ms, b.close) for b in series[symbol]]
        for b in series[symbol]:
            up = scoring.apply(symbol, Interval.D1, b.ts_ms, b.open, b.high, b.low, b.close, b.volume, 0)
            if up is None or up.grade is None:
                continue
            if up.grade.trader_grade is not None:
                trader.setdefault(symbol, {})[b.ts_ms] = up.grade.trader_grade
            if up.grade.investor_grade is not None:
                investor.setdefault(symbol, {})[b.ts_ms] = up.grade.investor_grade
            if up.grade.signal is not None:
                signals.append(SignalPoint(symbol, b.ts_ms, up.grade.signal[0]))
    intraday_closes: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for symbol, interval, bars in iter_bundle(bundle_dir, symbols, list(intraday)) if intraday else ():
        intraday_closes.setdefault(interval.value, {})[symbol] = [(b.ts_ms, b.close) for b in bars]
        entries = [(b.ts_ms, b.open, b.high, b.low, b.close, b.volume, 0) for b in bars]
        for entry, up in scoring.apply_batch(symbol, interval, entries):
            if up.signal is not None:
                signals.append(SignalPoint(symbol, entry[0], up.signal[0], interval.value))
    return track_record(closes, signals, trader, investor, intraday_closes=intraday_closes)


def render(report: TrackRecordReport, console: Console) -> None:
    common = ("hit rate", "strategy", "buy & hold", "max drawdown", "Sharpe", "B&H Sharpe", "turnover/yr", "days")
    t = right_aligned(
        f"Signals, followed long/flat (hit rate at {report.horizon_days} days)", ("token", "signals", *common)
    )
    for r in report.signals:
        t.add_row(r.symbol, str(r.signals), *_performance(r))
    console.print(t)
    if report.intraday:
        columns = ("token", "interval", "signals", *common[:2], "after 0.1%/change", *common[2:])
        t = right_aligned("Intraday signals, followed long/flat (hit rate one day later)", columns)
        for r in report.intraday:
            t.add_row(r.symbol, r.interval, str(r.signals), *_performance(r, f"{r.strategy_return_after_costs:+.0%}"))
        console.print(t)
    t = right_aligned(
        "Grades: rank information coefficient across tokens",
        ("grade", "forward return", "mean IC", "IC sd", "days", "t-stat (upper bound)"),
    )
    for g in report.grades:
        t.add_row(
            g.grade,
            f"{g.horizon_days} days",
            maybe(g.mean_ic, "+.3f"),
            maybe(g.ic_sd, ".3f"),
            str(g.days),
            maybe(g.t_stat, ".1f"),
        )
    console.print(t)


def _performance(r: SignalRecord, *after_costs: str) -> list[str]:
    """The cells every signals table shows, from hit rate to days (``after_costs`` after the strategy's)."""
    return [
        maybe(r.hit_rate, ".0%"),
        f"{r.strategy_return:+.0%}",
        *after_costs,
        f"{r.buy_and_hold_return:+.0%}",
        f"{r.max_drawdown:.0%}",
        maybe(r.sharpe, ".2f"),
        maybe(r.buy_and_hold_sharpe, ".2f"),
        f"{r.turnover_per_year:.1f}",
        str(r.days),
    ]
