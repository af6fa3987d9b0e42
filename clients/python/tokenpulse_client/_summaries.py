"""Compact, unit-labelled summaries of API answers for AI agents (the MCP tools' results).

Each ``*_summary`` function turns SDK models into a small dict whose keys carry their unit (``price_usd``,
``change_24h_pct``, dates as ``YYYY-MM-DD``); :func:`render` writes such a dict as short text, formatting
each number by its key's unit. No HTTP here: the tools fetch with the SDK and summarise with these.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any

from tokenpulse_client import models as m

GRADE_KEYS = ("trader_grade", "investor_grade")


# ------------------------------------------------------------------------------------------ values


def day(value: date | datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%d")


def moment(value: datetime | None) -> str | None:
    """A time as ``YYYY-MM-DD HH:MM UTC``."""
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def usd(value: float | None) -> str:
    if value is None:
        return "n/a"
    size = abs(value)
    for limit, suffix in ((1e12, " trillion"), (1e9, " billion"), (1e6, " million")):
        if size >= limit:
            return f"${value / limit:,.2f}{suffix}"
    return f"${value:,.2f}" if size >= 1 else f"${value:.6g}"


def has_unit(key: str) -> bool:
    return key.endswith(("_usd", "_pct")) or key in GRADE_KEYS


def show(key: str, value: Any) -> str:
    """``value`` as text, by the unit its key names."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if key.endswith("_usd"):
        return usd(value)
    if key.endswith("_pct"):
        return f"{value:+.2f}%"
    if key in GRADE_KEYS:
        return f"{value:.1f}/100"
    return f"{value:,}" if isinstance(value, int) else f"{value:.6g}"


def cell(value: Any) -> str:
    """A CSV cell: numbers to 8 significant digits (large ones whole), no units (the header carries them)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 1e7 else f"{value:.8g}"
    return str(value)


def csv_table(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([cell(row.get(c)) for c in columns] for row in rows)
    return out.getvalue().rstrip("\n")


def render(title: str, summary: dict[str, Any]) -> str:
    """``summary`` as text: ``key: value`` lines, nested objects on one line, lists of rows as CSV."""
    lines = [title]
    for key, value in summary.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{key} ({len(value)} {'row' if len(value) == 1 else 'rows'}, CSV):")
            lines.append(csv_table(value))
        elif isinstance(value, dict):
            lines.append(f"{key}: " + ", ".join(f"{k} {show(k if has_unit(k) else key, v)}" for k, v in value.items()))
        elif isinstance(value, list):
            lines.append(f"{key}: " + ("; ".join(str(v) for v in value) if value else "none"))
        else:
            lines.append(f"{key}: {show(key, value)}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- tokens


def signal_summary(signal: m.TokenSignal | None) -> dict[str, Any] | None:
    if signal is None:
        return None
    return {"direction": signal.direction, "strength": signal.strength, "since": day(signal.ts)}


def token_row(t: m.Token) -> dict[str, Any]:
    return {
        "symbol": t.symbol,
        "name": t.name,
        "price_usd": t.price,
        "change_24h_pct": t.change_24h,
        "volume_24h_usd": t.volume_24h,
        "market_cap_usd": t.market_cap,
        "trader_grade": t.trader_grade,
        "investor_grade": t.investor_grade,
        "signal": t.signal.direction if t.signal else None,
        "signal_since": day(t.signal.ts) if t.signal else None,
        "updated_at": moment(t.updated_at),
    }


def tokens_summary(tokens: Sequence[m.Token]) -> dict[str, Any]:
    return {"count": len(tokens), "tokens": [token_row(t) for t in tokens]}


def forecast_row(f: m.Forecast) -> dict[str, Any]:
    return {
        "horizon": f.horizon,
        "target_date": day(f.target_ts),
        "point_usd": f.point,
        "low_80_usd": f.lower,
        "high_80_usd": f.upper,
        "low_95_usd": f.lower_95,
        "high_95_usd": f.upper_95,
        "made": day(f.made_at),
        "model": f.model,
        "backtest_coverage_80": f.backtest.coverage,
        "backtest_mase": f.backtest.mase,
    }


def level_price(level: m.Level | None) -> float | None:
    return None if level is None else level.price


def token_summary(t: m.TokenDetail) -> dict[str, Any]:
    row = token_row(t)
    del row["signal"], row["signal_since"]
    return {
        **row,
        "signal": signal_summary(t.signal),
        "roi_pct": dict(t.roi),
        "key_support_usd": level_price(t.levels.key_support),
        "breakout_level_usd": level_price(t.levels.breakout_level),
        "forecasts": [forecast_row(f) for f in t.predictions],
    }


# ---------------------------------------------------------------------------------------- history


def pct_change(first: float | None, last: float | None) -> float | None:
    return None if not first or last is None else round((last / first - 1) * 100, 4)


def candles_summary(symbol: str, interval: str, candles: Sequence[m.Candle]) -> dict[str, Any]:
    closes = [c.close for c in candles]
    return {
        "symbol": symbol,
        "interval": interval,
        "from": moment(candles[0].ts) if candles else None,
        "to": moment(candles[-1].ts) if candles else None,
        "change_pct": pct_change(candles[0].open, closes[-1]) if candles else None,
        "high_usd": max((c.high for c in candles), default=None),
        "low_usd": min((c.low for c in candles), default=None),
        "candles": [
            {
                "open_time": moment(c.ts),
                "open_usd": c.open,
                "high_usd": c.high,
                "low_usd": c.low,
                "close_usd": c.close,
                f"volume_{symbol.lower()}": c.volume,
            }
            for c in candles
        ],
    }


def signals_summary(symbol: str, interval: str, signals: Sequence[m.Signal]) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "interval": interval,
        "count": len(signals),
        "latest": signals[-1].direction if signals else None,
        "signals": [
            {"date": moment(s.ts), "direction": s.direction, "strength": s.strength, "reasons": "; ".join(s.reasons)}
            for s in reversed(signals)
        ],
    }


def grades_summary(symbol: str, grades: Sequence[m.Grade]) -> dict[str, Any]:
    if not grades:
        return {"symbol": symbol, "as_of": None, "grades": []}
    first, latest = grades[0], grades[-1]
    return {
        "symbol": symbol,
        "trader_grade": latest.trader_grade,
        "investor_grade": latest.investor_grade,
        "as_of": day(latest.ts),
        "trader_change_points": _diff(first.trader_grade, latest.trader_grade),
        "investor_change_points": _diff(first.investor_grade, latest.investor_grade),
        "components_0_100": {k: round(v, 1) for k, v in latest.components.items() if v is not None},
        "grades": [
            {"date": day(g.ts), "trader_grade": g.trader_grade, "investor_grade": g.investor_grade} for g in grades
        ],
    }


def _diff(first: float | None, last: float | None) -> float | None:
    return None if first is None or last is None else round(last - first, 2)


# --------------------------------------------------------------------------------------- analytics


def levels_summary(lv: m.Levels) -> dict[str, Any]:
    def rows(levels: Iterable[m.Level]) -> list[dict[str, Any]]:
        return [
            {
                "price_usd": x.price,
                "distance_pct": pct_change(lv.price, x.price),
                "strength_0_1": x.strength,
                "touches": x.touches,
                "last_touch": day(x.last_touch),
            }
            for x in levels
        ]

    return {
        "symbol": lv.symbol,
        "price_usd": lv.price,
        "as_of": day(lv.as_of),
        "key_support_usd": level_price(lv.key_support),
        "breakout_level_usd": level_price(lv.breakout_level),
        "support": rows(lv.support),
        "resistance": rows(lv.resistance),
    }


def prediction_summary(p: m.Predictions) -> dict[str, Any]:
    out: dict[str, Any] = {"symbol": p.symbol, "status": p.status}
    if p.message:
        out["message"] = p.message
    out["forecasts"] = [forecast_row(f) for f in p.horizons]
    return out


def cycles_summary(c: m.Cycles) -> dict[str, Any]:
    proj = c.projection
    return {
        "as_of": day(c.as_of),
        "current_run_start": day(proj.start) if proj else None,
        "current_run_start_price_usd": proj.start_price if proj else None,
        "scenarios": [
            {
                "name": s.name,
                "peak_date": day(s.end_date),
                "btc_price_target_usd": s.btc_price_target,
                "total_market_cap_target_usd": s.total_market_cap_target,
                "roi_multiple": s.roi,
            }
            for s in (proj.scenarios if proj else [])
        ],
        "halvings": [
            {
                "halving": day(h.date),
                "price_usd": h.price,
                "peak_date": day(h.peak_date),
                "peak_price_usd": h.peak_price,
                "multiple": h.multiple,
                "days_to_peak": h.days_to_peak,
            }
            for h in c.halvings
        ],
        "notes": list(c.notes),
    }


# ----------------------------------------------------------------------------------------- alerts


def rule_row(rule: m.AlertRule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "symbol": rule.symbol,
        "name": rule.name,
        "condition": rule.description if rule.readable else f"unreadable: {rule.error}",
        "channels": " ".join(f"{c.type}:{c.target}" for c in rule.channels or []) or "log and stream only",
        "cooldown_s": rule.cooldown_s,
        "created": moment(rule.created_at),
    }


def alerts_summary(rules: Sequence[m.AlertRule]) -> dict[str, Any]:
    return {"count": len(rules), "rules": [rule_row(r) for r in rules]}


def _pct(fraction: float | None) -> float | None:
    return None if fraction is None else round(fraction * 100, 4)


def quant_summary(q: m.Quant) -> dict[str, Any]:
    return {
        "symbol": q.symbol,
        "window": q.window,
        "from": day(q.start),
        "as_of": day(q.as_of),
        "volatility_annual_pct": _pct(q.volatility),
        "sharpe": q.sharpe,
        "sortino": q.sortino,
        "max_drawdown_pct": _pct(q.max_drawdown),
        "cagr_pct": _pct(q.cagr),
        "beta_btc": q.beta_btc,
        "corr_btc": q.corr_btc,
        "daily_returns_used": q.n,
    }


def market_summary(ms: m.MarketState) -> dict[str, Any]:
    return {
        "as_of": day(ms.as_of),
        "state": ms.state,
        "score_0_100": ms.score,
        "breadth_pct": _pct(ms.breadth),
        "components_0_100": ms.components,
        "total_market_cap_usd": ms.total_market_cap,
        "total_market_cap_date": day(ms.total_market_cap_date),
        "btc_dominance_pct": ms.btc_dominance,
        "forward_30d_total_market_return_by_state": [
            {
                "state": r.state,
                "days": r.days,
                "mean_pct": _pct(r.mean_forward_return),
                "share_positive_pct": _pct(r.share_positive),
            }
            for r in ms.track_record
        ],
    }
