"""The stored history the market analytics read, loaded once per data version, and their answers kept with it.

Quant, correlation, market state, indices, scenarios and reports all read :class:`MarketData`; it is read from
the store again only when a daily candle, a market cap, a grade or a signal has been added since, and the answers
computed from it are dropped with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

from tokenpulse_gateway.analytics.series import MarketData
from tokenpulse_gateway.caches import MarketHistory
from tokenpulse_gateway.queries.analytics import AnalyticsQueries

T = TypeVar("T")


async def market_data(queries: AnalyticsQueries, history: MarketHistory) -> MarketData:
    return await history.current(queries.track_record_version, queries.market_data)


async def computed(history: MarketHistory, key: Hashable, compute: Callable[..., T], *args: Any) -> T:
    """``compute(*args)``'s value for the current data, computed off the event loop once per data version."""
    hit: T | None = history.answer(key)
    if hit is None:
        hit = await asyncio.to_thread(compute, *args)
        history.keep(key, hit)
    return hit


@dataclass(frozen=True)
class MarketAnalytics:
    """What a market-analytics route reads: the stored history (:func:`market_data`) and the answers kept with it."""

    queries: AnalyticsQueries
    history: MarketHistory

    async def data(self) -> MarketData:
        return await market_data(self.queries, self.history)

    async def computed(self, key: Hashable, compute: Callable[..., T], *args: Any) -> T:
        return await computed(self.history, key, compute, *args)
