"""``tokenpulse cycles``: the halving-cycle report as rich tables, from the bundled history."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table
from tokenpulse_gateway.analytics.cycles import CycleData, CycleReport
from tokenpulse_ingest.bundle import MARKETCAP_FILES, iter_bundle, read_marketcaps
from tokenpulse_shared.events import Interval

from tokenpulse.tables import right_aligned


def _day(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, UTC).date()


def load_cycle_data(bundle_dir: Path) -> CycleData:
    closes = {
        s: [(_day(b.ts_ms), b.close) for b in bars] for s, _, bars in iter_bundle(bundle_dir, None, [Interval.D1])
    }
    total = next(f for f in MARKETCAP_FILES if f.symbol is None)
    caps = [(_day(p.ts_ms), p.market_cap) for p in read_marketcaps(bundle_dir, total)]
    return CycleData(btc=closes.pop("BTC"), total_market_cap=caps, altcoins=closes)


def _money(v: float | None) -> str:
    if v is None:
        return "—"
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6)):
        if abs(v) >= div:
            return f"${v / div:,.2f}{unit}"
    return f"${v:,.2f}"


def render(report: CycleReport, console: Console) -> None:
    t = right_aligned(
        f"Bitcoin halving runs (as of {report.as_of})",
        ("#", "halving", "height", "price", "peak", "peak price", "multiple", "days", "bottom→peak", "market x"),
    )
    for h in report.halvings:
        t.add_row(
            str(h.number),
            str(h.date),
            f"{h.height:,}",
            _money(h.price),
            f"{h.peak_date}{'' if h.confirmed else ' (so far)'}",
            _money(h.peak_price),
            f"{h.multiple:,.1f}x" if h.multiple else "—",
            str(h.days_to_peak or "—"),
            f"{h.bottom_to_peak_multiple:,.1f}x / {h.bottom_to_peak_days}d" if h.bottom_to_peak_multiple else "—",
            f"{h.market_multiple:,.1f}x" if h.market_multiple else "—",
        )
    console.print(t)
    p = report.projection
    if p:
        t = right_aligned(
            f"Current run from {p.start} ({p.basis}); previous run #{p.previous_run}: "
            f"{p.previous_length_days} days, {p.previous_roi:,.2f}x",
            ("scenario", "length x", "ROI ÷", "end date", "BTC target", "total market cap target"),
        )
        for s in p.scenarios:
            t.add_row(
                s.name,
                f"{s.length_multiplier:g}",
                f"{s.roi_reduction:g}",
                str(s.end_date),
                _money(s.btc_price_target),
                _money(s.total_market_cap_target),
            )
        console.print(t)
    t = right_aligned(
        "Track record: the projection made on each halving day vs what happened",
        ("run", "actual peak", "price", "scenario", "end date", "days off", "price off", "market cap off"),
    )
    for tr in report.track_record:
        for o in tr.scenarios:
            t.add_row(
                str(tr.run),
                f"{tr.actual_peak_date}{'' if tr.actual_peak_confirmed else ' (so far)'}",
                _money(tr.actual_peak_price),
                o.name,
                str(o.end_date),
                f"{o.days_error:+d}",
                f"{o.price_error_pct:+.0f}%",
                f"{o.market_cap_error_pct:+.0f}%" if o.market_cap_error_pct is not None else "—",
            )
    console.print(t)
    t = Table(title="Altcoin seasons: close on the BTC peak day / close on the halving day, relative to BTC")
    for col in ("run", "window", "BTC", "outperformed BTC", "underperformed", "not covered"):
        t.add_column(col)
    for a in report.altcoin_season:
        t.add_row(
            str(a.run),
            f"{a.start} → {a.end}",
            f"{a.btc_multiple:,.1f}x",
            ", ".join(f"{x.symbol} {x.relative_to_btc:.2f}" for x in a.altcoins if x.outperformed_btc) or "—",
            ", ".join(f"{x.symbol} {x.relative_to_btc:.2f}" for x in a.altcoins if not x.outperformed_btc) or "—",
            ", ".join(a.not_covered) or "—",
        )
    console.print(t)
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
