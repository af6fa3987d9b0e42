"""``tokenpulse market-record``: replay the bundled daily history through scoring, compute the market state of
every day (walk-forward) and measure it: the total crypto market cap's return over the next 30 days by state."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table
from tokenpulse_gateway.analytics.market_state import StateRecord, market_history, track_record
from tokenpulse_gateway.analytics.series import MarketData, Series
from tokenpulse_ingest.bundle import MARKETCAP_FILES, iter_bundle, read_marketcaps
from tokenpulse_scoring.service import ScoringService
from tokenpulse_shared.events import Interval


def day_of(ts_ms: int) -> date:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).date()


def replayed(bundle_dir: Path, symbols: list[str]) -> MarketData:
    """What the gateway reads from the store after a backfill: closes, caps, trader grades, daily signals."""
    series = {s: bars for s, _, bars in iter_bundle(bundle_dir, symbols, [Interval.D1])}
    scoring = ScoringService()
    closes: dict[str, Series] = {}
    trader: dict[str, Series] = {}
    signals: dict[str, list[tuple[date, str]]] = {}
    for symbol in sorted(series, key=lambda s: (s != "BTC", s)):  # BTC first, as a replay publishes it
        closes[symbol] = [(day_of(b.ts_ms), b.close) for b in series[symbol]]
        for b in series[symbol]:
            up = scoring.apply(symbol, Interval.D1, b.ts_ms, b.open, b.high, b.low, b.close, b.volume, 0)
            if up is None or up.grade is None:
                continue
            if up.grade.trader_grade is not None:
                trader.setdefault(symbol, []).append((day_of(b.ts_ms), up.grade.trader_grade))
            if up.grade.signal is not None:
                signals.setdefault(symbol, []).append((day_of(b.ts_ms), str(up.grade.signal[0])))
    caps: dict[str, Series] = {}
    total: Series = []
    for spec in MARKETCAP_FILES:
        if spec.symbol is not None and spec.symbol not in symbols:
            continue
        points = [(day_of(p.ts_ms), p.market_cap) for p in read_marketcaps(bundle_dir, spec)]
        if spec.symbol is None:
            total = points
        else:
            caps[spec.symbol] = points
    return MarketData(closes=closes, caps=caps, total_caps=total, trader=trader, signals=signals)


def market_record(bundle_dir: Path, symbols: list[str]) -> list[StateRecord]:
    data = replayed(bundle_dir, symbols)
    return track_record(data, market_history(data))


def render(records: list[StateRecord], console: Console) -> None:
    t = Table(title="Market state: total crypto market cap's return over the next 30 days, by state")
    for col in ("state", "days", "mean", "median", "share positive"):
        t.add_column(col, justify="right")
    for r in records:
        pct = [f"{v:+.1%}" if v is not None else "—" for v in (r.mean_forward_return, r.median_forward_return)]
        share = f"{r.share_positive:.0%}" if r.share_positive is not None else "—"
        t.add_row(r.state, str(r.days), *pct, share)
    console.print(t)
