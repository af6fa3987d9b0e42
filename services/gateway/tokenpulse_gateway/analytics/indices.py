"""Indices: rules fixed in advance, simulated walk-forward on the stored daily history.

Each index is a book of token positions (and cash) valued at daily closes. On a rebalance day, after that day's
closes, the rules choose weights from data dated that day or earlier only; the book is traded to them at those
closes, paying ``COST`` per unit of value traded (0.1 % fee + 0.1 % slippage, an assumption, not a measurement).
Between rebalances the positions drift with their prices. A position whose token has no close on a day keeps its
value. NAV starts at 100 on the first day the rules hold something. Compared, over the same days, with BTC
bought and held and with the equal-weight basket of every tracked token (same schedule, same costs).
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from tokenpulse_gateway.analytics.series import MarketData, max_drawdown

COST = 0.002
Weights = dict[str, float]


@dataclass(frozen=True)
class IndexRules:
    id: str
    name: str
    selection: Literal["market_cap", "trader_grade"]
    rebalance: Literal["monthly", "weekly"]
    top_n: int = 5
    grade_threshold: float = 60.0

    def describe(self) -> str:
        when = "on the first day of each month" if self.rebalance == "monthly" else "every Monday"
        if self.selection == "market_cap":
            what = f"the {self.top_n} tracked tokens with the largest market cap, weighted by market cap"
        else:
            what = (
                f"equal weights in every tracked token whose latest Trader Grade is {self.grade_threshold:g} or "
                "more, else cash"
            )
        return f"Holds {what}; rebalanced {when} at the daily close; {COST:.1%} of the value traded as costs."


INDICES: tuple[IndexRules, ...] = (
    IndexRules("mcap-top5", "Market-cap top 5", "market_cap", "monthly", top_n=5),
    IndexRules("grade-60", "Trader Grade 60+", "trader_grade", "weekly", grade_threshold=60.0),
)
BY_ID = {rules.id: rules for rules in INDICES}


def is_rebalance_day(rules: IndexRules, day: date) -> bool:
    return day.day == 1 if rules.rebalance == "monthly" else day.weekday() == 0


def market_cap_weights(data: MarketData, day: date, top_n: int) -> Weights:
    caps = {s: c for s in data.symbols if (c := data.market_cap_at(s, day)) is not None}
    top = sorted(caps, key=lambda s: -caps[s])[:top_n]
    total = sum(caps[s] for s in top)
    return {s: caps[s] / total for s in top} if total > 0 else {}


def grade_weights(data: MarketData, day: date, threshold: float) -> Weights:
    chosen = [
        s
        for s in data.symbols
        if (g := data.trader_grade_at(s, day)) is not None and g >= threshold and data.close_at(s, day)
    ]
    return dict.fromkeys(chosen, 1 / len(chosen)) if chosen else {}


def equal_weights(data: MarketData, day: date) -> Weights:
    held = [s for s in data.symbols if data.close_at(s, day)]
    return dict.fromkeys(held, 1 / len(held)) if held else {}


def weights_of(rules: IndexRules) -> Callable[[MarketData, date], Weights]:
    if rules.selection == "market_cap":
        return lambda data, day: market_cap_weights(data, day, rules.top_n)
    return lambda data, day: grade_weights(data, day, rules.grade_threshold)


@dataclass
class Book:
    """Positions by value, the price each was last valued at, and cash."""

    nav: float = 100.0
    values: dict[str, float] = field(default_factory=dict)
    prices: dict[str, float] = field(default_factory=dict)
    cash: float = 100.0

    def mark(self, data: MarketData, day: date) -> None:
        """Value each position at the day's close (a token without one keeps its value)."""
        for symbol in self.values:
            close = data.daily[symbol].at(day, 0)
            if close is not None:
                self.values[symbol] *= close / self.prices[symbol]
                self.prices[symbol] = close
        self.nav = self.cash + sum(self.values.values())

    def trade(self, data: MarketData, day: date, weights: Weights) -> float:
        """Trade to ``weights`` at the day's closes; returns the cost paid (a fraction of the NAV before it)."""
        before = self.nav
        traded = sum(abs(before * weights.get(s, 0.0) - self.values.get(s, 0.0)) for s in {*weights, *self.values})
        self.nav = before - COST * traded
        self.values = {s: self.nav * w for s, w in weights.items()}
        self.prices = {s: p for s in weights if (p := data.close_at(s, day)) is not None}
        self.cash = self.nav - sum(self.values.values())
        return COST * traded / before


class Constituent(BaseModel):
    symbol: str
    weight: float


class Rebalance(BaseModel):
    date: dt.date
    constituents: list[Constituent]
    cost: float = Field(description="costs paid, as a fraction of the NAV")


@dataclass
class Run:
    days: list[date]
    navs: list[float]
    rebalances: list[Rebalance]


def simulate(
    data: MarketData, rules: IndexRules, choose: Callable[[MarketData, date], Weights], start: date | None = None
) -> Run:
    """The book day by day to the last close, from ``start`` or the first day ``choose`` holds something."""
    end = data.last_day
    day = start or next(
        (d for d in _days(data) if choose(data, d)),
        None,
    )
    run = Run([], [], [])
    if day is None or end is None:
        return run
    book = Book()
    while day <= end:
        book.mark(data, day)
        if not run.days or is_rebalance_day(rules, day):
            weights = choose(data, day)
            cost = book.trade(data, day, weights)
            held = [Constituent(symbol=s, weight=w) for s, w in sorted(weights.items(), key=lambda x: -x[1])]
            run.rebalances.append(Rebalance(date=day, constituents=held, cost=cost))
        run.days.append(day)
        run.navs.append(book.nav)
        day += timedelta(days=1)
    return run


def _days(data: MarketData) -> list[date]:
    first = min((d.days[0] for d in data.daily.values() if d.days), default=None)
    last = data.last_day
    if first is None or last is None:
        return []
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


class Stats(BaseModel):
    total_return: float
    cagr: float | None
    volatility: float | None = Field(description="stdev of daily NAV returns x √365")
    max_drawdown: float


def stats(navs: list[float], days: int) -> Stats:
    returns = [b / a - 1 for a, b in itertools.pairwise(navs)]
    years = days / 365
    return Stats(
        total_return=navs[-1] / navs[0] - 1,
        cagr=(navs[-1] / navs[0]) ** (1 / years) - 1 if years > 0 else None,
        volatility=statistics.stdev(returns) * math.sqrt(365) if len(returns) > 1 else None,
        max_drawdown=max_drawdown(navs),
    )


class IndexPoint(BaseModel):
    date: dt.date
    nav: float
    btc: float | None = Field(description="BTC bought and held, 100 on the index's first day")
    equal_weight: float = Field(description="the equal-weight basket, same schedule and costs")


class IndexSummary(BaseModel):
    id: str
    name: str
    rules: str
    rebalance: str
    cost_per_unit_traded: float
    start: date | None
    as_of: date | None
    nav: float | None
    constituents: list[Constituent] = Field(description="the weights set at the latest rebalance")
    stats: dict[str, Stats] = Field(description="index, btc and equal_weight over the index's days")


class IndexDetail(IndexSummary):
    history: list[IndexPoint]
    rebalances: list[Rebalance]


def _btc_navs(data: MarketData, days: list[date]) -> list[float | None]:
    base = data.close_at("BTC", days[0]) if "BTC" in data.daily else None
    return [None if base is None or (c := data.close_at("BTC", d)) is None else 100 * c / base for d in days]


def index_detail(data: MarketData, rules: IndexRules) -> IndexDetail:
    run = simulate(data, rules, weights_of(rules))
    summary = IndexSummary(
        id=rules.id,
        name=rules.name,
        rules=rules.describe(),
        rebalance=rules.rebalance,
        cost_per_unit_traded=COST,
        start=run.days[0] if run.days else None,
        as_of=run.days[-1] if run.days else None,
        nav=run.navs[-1] if run.navs else None,
        constituents=run.rebalances[-1].constituents if run.rebalances else [],
        stats={},
    )
    if not run.days:
        return IndexDetail(**summary.model_dump(), history=[], rebalances=[])
    basket = simulate(data, rules, equal_weights, start=run.days[0])
    btc = _btc_navs(data, run.days)
    span = (run.days[-1] - run.days[0]).days
    summary.stats = {"index": stats(run.navs, span), "equal_weight": stats(basket.navs, span)}
    if all(v is not None for v in btc):
        summary.stats["btc"] = stats([v for v in btc if v is not None], span)
    history = [
        IndexPoint(date=d, nav=n, btc=b, equal_weight=e)
        for d, n, b, e in zip(run.days, run.navs, btc, basket.navs, strict=True)
    ]
    return IndexDetail(**summary.model_dump(), history=history, rebalances=run.rebalances)
