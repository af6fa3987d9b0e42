"""Measured track record of signals and grades on daily history (walk-forward, no look-ahead).

A pure function over what the platform published, so the same code runs in the gateway (on
the stored grades, signals and candles) and in the CLI (on a replay of the bundle):

* **Signals** — per token, following them long/flat: a bullish signal on day d means long
  from d's close, a bearish one flat from d's close; the daily return of day d+1 is earned
  by the position held at d's close (so a signal never profits from its own day). Reported:
  hit rate (share of signals whose direction matched the close ``horizon_days`` later), the
  strategy's total return vs buy-and-hold over the same days, maximum drawdown, annualised
  Sharpe (daily returns x sqrt(365), no risk-free rate) and turnover (position changes per
  year).
  Intraday signals (1h, 4h) are measured the same way on their own candles: the hit rate at one
  day (24 1h candles, 6 4h candles), Sharpe annualised with the candles in a year. Returns across
  a gap in the candles (a missing stretch of data) are left out, for the strategy and
  buy-and-hold alike, and a hit needs the later candle to exist exactly ``horizon`` candles on.
  Both returns are also given after a cost of ``COST_PER_CHANGE`` (0.1 %) per position change,
  which matters for the intraday signals' turnover.
* **Grades** — for every day with at least ``min_tokens`` graded tokens, the Spearman rank
  correlation across tokens between the grade and the forward return (7 days for the Trader
  Grade, 30 days for the Investor Grade): the rank information coefficient. Reported: mean
  IC, its standard deviation, the number of days and the t-statistic (mean / (sd / sqrt(n))).
  Overlapping forward windows make neighbouring days dependent, so the t-statistic overstates
  significance; read it as an upper bound.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from pydantic import BaseModel
from tokenpulse_shared.timeutil import DAY_MS, HOUR_MS

from tokenpulse_gateway.analytics.series import max_drawdown

YEAR_MS = 365 * DAY_MS
COST_PER_CHANGE = 0.001  # 0.1 % per position change (taker fee plus slippage on a liquid pair, roughly)
INTRADAY = {"1h": HOUR_MS, "4h": 4 * HOUR_MS}


@dataclass(frozen=True)
class SignalPoint:
    symbol: str
    ts_ms: int
    direction: str  # bullish | bearish
    interval: str = "1d"


class SignalRecord(BaseModel):
    symbol: str
    interval: str = "1d"
    horizon_bars: int = 30
    signals: int
    hit_rate: float | None
    strategy_return: float
    buy_and_hold_return: float
    max_drawdown: float
    sharpe: float | None
    buy_and_hold_sharpe: float | None
    turnover_per_year: float
    days: int
    strategy_return_after_costs: float = 0.0


class GradeIC(BaseModel):
    grade: str
    horizon_days: int
    mean_ic: float | None
    ic_sd: float | None
    days: int
    t_stat: float | None


class TrackRecordReport(BaseModel):
    horizon_days: int
    signals: list[SignalRecord]
    signals_overall: dict[str, float | None]
    grades: list[GradeIC]
    intraday: list[SignalRecord] = []


def _sharpe(returns: list[float], periods_per_year: float = 365) -> float | None:
    if len(returns) < 30:
        return None
    mean = sum(returns) / len(returns)
    sd = math.sqrt(sum((r - mean) ** 2 for r in returns) / (len(returns) - 1))
    return round(mean / sd * math.sqrt(periods_per_year), 4) if sd > 0 else None


def _max_drawdown(equity: list[float]) -> float:
    return round(max_drawdown(equity), 4)


def signal_record(
    symbol: str,
    closes: list[tuple[int, float]],
    signals: list[SignalPoint],
    horizon_days: int,
    bar_ms: int = DAY_MS,
    interval: str = "1d",
) -> SignalRecord | None:
    """One token's signals of one interval followed long/flat; ``horizon_days`` is in candles."""
    sigs = sorted((s for s in signals if s.symbol == symbol and s.interval == interval), key=lambda s: s.ts_ms)
    if not sigs:
        return None
    index = {ts: i for i, (ts, _) in enumerate(closes)}
    start = index.get(sigs[0].ts_ms)
    if start is None:
        return None
    by_day = {s.ts_ms: s.direction for s in sigs}
    position, changes = 0, 0
    strat, hold, costed = [], [], []
    for i in range(start, len(closes) - 1):
        ts, close = closes[i]
        direction = by_day.get(ts)
        new = 1 if direction == "bullish" else 0 if direction == "bearish" else position
        changed = new != position
        changes += changed
        position = new
        if closes[i + 1][0] - ts != bar_ms:
            continue  # a gap in the data: no return is earned across it, by either
        r = closes[i + 1][1] / close - 1
        strat.append(position * r)
        hold.append(r)
        costed.append(position * r - (COST_PER_CHANGE if changed else 0.0))
    hits = total = 0
    for s in sigs:
        at = index.get(s.ts_ms)
        if at is None or at + horizon_days >= len(closes):
            continue
        if closes[at + horizon_days][0] - s.ts_ms != horizon_days * bar_ms:
            continue
        later = closes[at + horizon_days][1] / closes[at][1] - 1
        total += 1
        hits += (later > 0) == (s.direction == "bullish")
    equity, hold_total, after_costs = [1.0], 1.0, 1.0
    for r in strat:
        equity.append(equity[-1] * (1 + r))
    for r in hold:
        hold_total *= 1 + r
    for r in costed:
        after_costs *= 1 + r
    years = max(len(strat) * bar_ms / YEAR_MS, 1e-9)
    per_year = YEAR_MS / bar_ms
    return SignalRecord(
        symbol=symbol,
        interval=interval,
        horizon_bars=horizon_days,
        signals=len(sigs),
        hit_rate=round(hits / total, 4) if total else None,
        strategy_return=round(equity[-1] - 1, 4),
        buy_and_hold_return=round(hold_total - 1, 4),
        max_drawdown=_max_drawdown(equity),
        sharpe=_sharpe(strat, per_year),
        buy_and_hold_sharpe=_sharpe(hold, per_year),
        turnover_per_year=round(changes / years, 2),
        days=round(len(strat) * bar_ms / DAY_MS),
        strategy_return_after_costs=round(after_costs - 1, 4),
    )


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(xs: list[float], ys: list[float]) -> float | None:
    rx, ry = _ranks(xs), _ranks(ys)
    n = len(xs)
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else None


def grade_ic(
    closes: dict[str, list[tuple[int, float]]],
    grades: dict[str, dict[int, float]],
    horizon_days: int,
    name: str,
    min_tokens: int = 3,
) -> GradeIC:
    forward: dict[str, dict[int, float]] = {}
    for symbol, series in closes.items():
        fwd = {}
        for i in range(len(series) - horizon_days):
            ts, c = series[i]
            if series[i + horizon_days][0] - ts == horizon_days * DAY_MS:  # no gap in between
                fwd[ts] = series[i + horizon_days][1] / c - 1
        forward[symbol] = fwd
    by_day: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for symbol, g in grades.items():
        for ts, value in g.items():
            if ts in forward.get(symbol, {}):
                by_day[ts].append((value, forward[symbol][ts]))
    ics = [
        ic
        for pts in by_day.values()
        if len(pts) >= min_tokens
        if (ic := spearman([p[0] for p in pts], [p[1] for p in pts])) is not None
    ]
    if not ics:
        return GradeIC(grade=name, horizon_days=horizon_days, mean_ic=None, ic_sd=None, days=0, t_stat=None)
    mean = sum(ics) / len(ics)
    sd = math.sqrt(sum((x - mean) ** 2 for x in ics) / (len(ics) - 1)) if len(ics) > 1 else 0.0
    t = mean / (sd / math.sqrt(len(ics))) if sd > 0 else None
    return GradeIC(
        grade=name,
        horizon_days=horizon_days,
        mean_ic=round(mean, 4),
        ic_sd=round(sd, 4),
        days=len(ics),
        t_stat=round(t, 2) if t is not None else None,
    )


def track_record(
    closes: dict[str, list[tuple[int, float]]],
    signals: list[SignalPoint],
    trader_grades: dict[str, dict[int, float]],
    investor_grades: dict[str, dict[int, float]],
    horizon_days: int = 30,
    intraday_closes: dict[str, dict[str, list[tuple[int, float]]]] | None = None,
) -> TrackRecordReport:
    """``intraday_closes``: interval ("1h", "4h") -> symbol -> closes, for the intraday signals."""
    records = [r for s in sorted(closes) if (r := signal_record(s, closes[s], signals, horizon_days)) is not None]
    intraday = [
        r
        for interval, bar_ms in INTRADAY.items()
        for s in sorted((intraday_closes or {}).get(interval, {}))
        if (r := signal_record(s, intraday_closes[interval][s], signals, DAY_MS // bar_ms, bar_ms, interval))  # type: ignore[index]
        is not None
    ]
    overall: dict[str, float | None] = {}
    if records:
        n = sum(r.signals for r in records)
        hit = [r.hit_rate * r.signals for r in records if r.hit_rate is not None]
        overall = {
            "signals": float(n),
            "hit_rate": round(sum(hit) / n, 4) if hit else None,
            "tokens_beating_buy_and_hold": float(sum(r.strategy_return > r.buy_and_hold_return for r in records)),
            "tokens": float(len(records)),
            "median_max_drawdown": sorted(r.max_drawdown for r in records)[len(records) // 2],
        }
    return TrackRecordReport(
        horizon_days=horizon_days,
        signals=records,
        signals_overall=overall,
        grades=[grade_ic(closes, trader_grades, 7, "trader"), grade_ic(closes, investor_grades, 30, "investor")],
        intraday=intraday,
    )
