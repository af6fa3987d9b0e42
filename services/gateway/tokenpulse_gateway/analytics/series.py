"""The daily history the market analytics read (quant, correlation, market state, indices, scenarios), and the
lookups they share: a value on or before a day, a window of days, a token's circulating supply.

Pure (no I/O): :class:`MarketData` is filled from the store by the gateway and from CSV files by the tests.
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cached_property

Series = list[tuple[date, float]]

CLOSE_MAX_AGE_DAYS = 3
"""a close at most this old stands for a day's price (the bundle's few missing days)"""
SNAPSHOT_MAX_AGE_DAYS = 7
"""a grade or a total-market-cap snapshot at most this old stands for a day's"""


@dataclass(frozen=True)
class Daily:
    """One series sorted by day, with look-ups that never read past the day asked for."""

    days: list[date]
    values: list[float]

    @classmethod
    def of(cls, series: Series) -> Daily:
        points = sorted(series)
        return cls([d for d, _ in points], [v for _, v in points])

    def index_at(self, day: date, max_age_days: int | None = None) -> int | None:
        """Index of the last point on or before ``day`` (no older than ``max_age_days``), else None."""
        i = bisect.bisect_right(self.days, day) - 1
        if i < 0 or (max_age_days is not None and (day - self.days[i]).days > max_age_days):
            return None
        return i

    def at(self, day: date, max_age_days: int | None = None) -> float | None:
        i = self.index_at(day, max_age_days)
        return None if i is None else self.values[i]

    def between(self, start: date, end: date) -> Series:
        """The points dated ``start`` to ``end``, both inclusive."""
        lo, hi = bisect.bisect_left(self.days, start), bisect.bisect_right(self.days, end)
        return list(zip(self.days[lo:hi], self.values[lo:hi], strict=True))

    @property
    def last(self) -> date | None:
        return self.days[-1] if self.days else None


@dataclass(frozen=True)
class MarketData:
    """Every token's daily closes, market-cap snapshots (00:00 UTC, CoinGecko's convention), the total crypto
    market cap's snapshots, daily Trader Grades and standing daily signals (direction by day)."""

    closes: dict[str, Series]
    caps: dict[str, Series] = field(default_factory=dict)
    total_caps: Series = field(default_factory=list)
    trader: dict[str, Series] = field(default_factory=dict)
    signals: dict[str, list[tuple[date, str]]] = field(default_factory=dict)

    @cached_property
    def daily(self) -> dict[str, Daily]:
        return {s: Daily.of(v) for s, v in self.closes.items()}

    @cached_property
    def daily_caps(self) -> dict[str, Daily]:
        return {s: Daily.of(v) for s, v in self.caps.items()}

    @cached_property
    def daily_total(self) -> Daily:
        return Daily.of(self.total_caps)

    @cached_property
    def daily_trader(self) -> dict[str, Daily]:
        return {s: Daily.of(v) for s, v in self.trader.items()}

    @cached_property
    def signal_days(self) -> dict[str, tuple[list[date], list[str]]]:
        out = {}
        for symbol, points in self.signals.items():
            ordered = sorted(points)
            out[symbol] = ([d for d, _ in ordered], [direction for _, direction in ordered])
        return out

    @property
    def symbols(self) -> list[str]:
        return sorted(self.closes)

    def close_at(self, symbol: str, day: date) -> float | None:
        series = self.daily.get(symbol)
        return None if series is None else series.at(day, CLOSE_MAX_AGE_DAYS)

    def supply_at(self, symbol: str, day: date) -> float | None:
        """Circulating supply implied by the market-cap data: the latest snapshot's market cap on or before
        ``day`` divided by the price it was taken at (a 00:00 UTC snapshot sees the previous day's close)."""
        caps = self.daily_caps.get(symbol)
        i = None if caps is None else caps.index_at(day)
        if caps is None or i is None:
            return None
        price = self.close_at(symbol, caps.days[i] - timedelta(days=1))
        return caps.values[i] / price if price else None

    def market_cap_at(self, symbol: str, day: date) -> float | None:
        """The token's market cap on ``day``: its close times the supply of :meth:`supply_at`."""
        supply, close = self.supply_at(symbol, day), self.close_at(symbol, day)
        return supply * close if supply is not None and close is not None else None

    def trader_grade_at(self, symbol: str, day: date) -> float | None:
        grades = self.daily_trader.get(symbol)
        return None if grades is None else grades.at(day, SNAPSHOT_MAX_AGE_DAYS)

    def signal_at(self, symbol: str, day: date) -> str | None:
        """Direction of the token's latest standing daily signal on or before ``day`` (what ``/v1/tokens`` shows)."""
        days, directions = self.signal_days.get(symbol, ([], []))
        i = bisect.bisect_right(days, day) - 1
        return directions[i] if i >= 0 else None

    @property
    def last_day(self) -> date | None:
        return max((d.last for d in self.daily.values() if d.last), default=None)


def simple_returns(closes: Series) -> Series:
    """Return between consecutive existing closes, dated at the later one."""
    return [(d, c / p - 1) for (_, p), (d, c) in itertools.pairwise(closes)]


def max_drawdown(values: list[float]) -> float:
    """min over the values of value / running maximum - 1 (0 when it never falls)."""
    peak, worst = -math.inf, 0.0
    for v in values:
        peak = max(peak, v)
        worst = min(worst, v / peak - 1)
    return worst


def squash(x: float, scale: float) -> float:
    """50 + 50·tanh(x / scale): any quantity onto 0..100, as the grades' components do."""
    return 50 + 50 * math.tanh(x / scale)
