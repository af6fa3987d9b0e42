"""The market state: one bullish / neutral / bearish reading of the tracked market per day, walk-forward.

On day d, from data dated d or earlier only (docs/methodology.md, "Market state"):

* **tracked market**: the tokens with a market cap on d (:meth:`MarketData.market_cap_at`: close x the supply
  implied by the latest market-cap snapshot);
* **breadth**: the share of that market cap whose latest daily signal is bullish;
* components on 0..100: ``breadth`` = 100 x breadth; ``trader_grade`` = the market-cap-weighted mean Trader
  Grade; ``momentum_30d`` = squash(the tracked market's 30-day return, 0.2), weights being the caps of 30 days
  before;
* **score** = the mean of the defined components (at least 2 of 3); **state** bullish at 60 or more, bearish at
  40 or less, else neutral.

The total crypto market cap and BTC dominance are reported beside it (latest snapshot on or before d) but not
scored: the bundled total ends before the bundled prices do.
"""

from __future__ import annotations

import datetime as dt
import statistics
from datetime import date, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from tokenpulse_gateway.analytics.series import MarketData, squash

State = Literal["bullish", "neutral", "bearish"]
BULLISH_AT, BEARISH_AT = 60.0, 40.0
MOMENTUM_DAYS, MOMENTUM_SCALE = 30, 0.2
MIN_COMPONENTS = 2
FORWARD_DAYS = 30


class MarketDay(BaseModel):
    date: dt.date
    state: State | None = Field(description="bullish (score ≥ 60), bearish (≤ 40), neutral; null: too little data")
    score: float | None = Field(description="mean of the defined components, 0..100")
    breadth: float | None = Field(description="share of the tracked market cap whose daily signal is bullish")
    components: dict[str, float | None]
    tracked_market_cap: float | None = Field(description="sum of the tracked tokens' market caps, USD")
    tokens: list[str] = Field(description="the tracked tokens with a market cap that day")
    total_market_cap: float | None = Field(description="total crypto market cap, latest snapshot on or before")
    total_market_cap_date: dt.date | None
    btc_dominance: float | None = Field(description="100 x BTC market cap / total, same snapshot day")


def state_of(score: float | None) -> State | None:
    if score is None:
        return None
    return "bullish" if score >= BULLISH_AT else "bearish" if score <= BEARISH_AT else "neutral"


def _weighted(values: dict[str, float], weights: dict[str, float]) -> float | None:
    total = sum(weights[s] for s in values)
    return sum(values[s] * weights[s] for s in values) / total if total > 0 else None


def _momentum(data: MarketData, day: date) -> float | None:
    """The tracked market's return over the last 30 days, market-cap weights of its first day."""
    start = day - timedelta(days=MOMENTUM_DAYS)
    moves: dict[str, float] = {}
    weights: dict[str, float] = {}
    for s in data.symbols:
        cap, then, now = data.market_cap_at(s, start), data.close_at(s, start), data.close_at(s, day)
        if cap is not None and then and now is not None:
            moves[s], weights[s] = now / then - 1, cap
    return _weighted(moves, weights)


def _total(data: MarketData, day: date) -> tuple[float | None, date | None, float | None]:
    """(total market cap, its snapshot day, BTC dominance) from the latest total snapshot on or before ``day``."""
    i = data.daily_total.index_at(day)
    if i is None:
        return None, None, None
    snap, total = data.daily_total.days[i], data.daily_total.values[i]
    btc = data.daily_caps["BTC"].at(snap, 1) if "BTC" in data.daily_caps else None
    return total, snap, None if btc is None else 100 * btc / total


def market_day(data: MarketData, day: date) -> MarketDay:
    caps = {s: c for s in data.symbols if (c := data.market_cap_at(s, day)) is not None}
    tracked = sum(caps.values())
    bullish = {s: 1.0 if data.signal_at(s, day) == "bullish" else 0.0 for s in caps}
    grades = {s: g for s in caps if (g := data.trader_grade_at(s, day)) is not None}
    breadth = _weighted(bullish, caps)
    momentum = _momentum(data, day)
    components = {
        "breadth": None if breadth is None else 100 * breadth,
        "trader_grade": _weighted(grades, caps),
        "momentum_30d": None if momentum is None else squash(momentum, MOMENTUM_SCALE),
    }
    defined = [v for v in components.values() if v is not None]
    score = statistics.fmean(defined) if len(defined) >= MIN_COMPONENTS else None
    total, total_day, dominance = _total(data, day)
    return MarketDay(
        date=day,
        state=state_of(score),
        score=score,
        breadth=breadth,
        components=components,
        tracked_market_cap=tracked or None,
        tokens=sorted(caps),
        total_market_cap=total,
        total_market_cap_date=total_day,
        btc_dominance=dominance,
    )


def first_day(data: MarketData) -> date | None:
    """The first day a token has a market cap: where the history starts."""
    return min((caps.days[0] for s, caps in data.daily_caps.items() if caps.days and s in data.daily), default=None)


def market_history(data: MarketData, start: date | None = None, end: date | None = None) -> list[MarketDay]:
    """Every day from ``start`` (default: the first with a market cap) to ``end`` (default: the last close)."""
    lo, hi = max(filter(None, (start, first_day(data))), default=None), end or data.last_day
    if lo is None or hi is None:
        return []
    return [market_day(data, lo + timedelta(days=i)) for i in range((hi - lo).days + 1)]


class StateRecord(BaseModel):
    state: str = Field(description="a state, or 'all' for every day with a state")
    days: int = Field(description="days in that state with a total market cap then and 30 days later")
    mean_forward_return: float | None = Field(description="mean of the total market cap's next-30-day return")
    median_forward_return: float | None
    share_positive: float | None = Field(description="share of those days whose forward return was above 0")


def track_record(data: MarketData, history: list[MarketDay]) -> list[StateRecord]:
    """The total crypto market cap's return over the 30 days after each day, grouped by that day's state.
    The windows overlap (one a day), so the days are not independent observations."""
    forward: dict[str, list[float]] = {"bullish": [], "neutral": [], "bearish": [], "all": []}
    total = data.daily_total
    for day in history:
        now, later = total.at(day.date, 1), total.at(day.date + timedelta(days=FORWARD_DAYS), 1)
        if day.state is not None and now and later is not None:
            forward[day.state].append(later / now - 1)
            forward["all"].append(later / now - 1)
    return [
        StateRecord(
            state=state,
            days=len(r),
            mean_forward_return=statistics.fmean(r) if r else None,
            median_forward_return=statistics.median(r) if r else None,
            share_positive=sum(x > 0 for x in r) / len(r) if r else None,
        )
        for state, r in forward.items()
    ]
