"""The stored history the market analytics read, loaded once per data version, and their answers kept with it.

Quant, correlation, market state, indices, scenarios and reports all read :class:`MarketData`; it is read from
the store again only when a daily candle, a market cap, a grade or a signal has been added since, and the answers
computed from it are dropped with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from tokenpulse_gateway.analytics.series import MarketData
from tokenpulse_gateway.caches import MarketHistory
from tokenpulse_gateway.queries.analytics import AnalyticsQueries

T = TypeVar("T")


async def market_data(queries: AnalyticsQueries, history: MarketHistory) -> MarketData:
    async with history.loading:
        version = await queries.track_record_version()
        data = history.get(version)
        if data is None:
            data = await queries.market_data()
            history.put(version, data)
        return data


async def computed(history: MarketHistory, key: Hashable, compute: Callable[..., T], *args: Any) -> T:
    """``compute(*args)``'s value for the current data, computed off the event loop once per data version."""
    hit: T | None = history.answer(key)
    if hit is None:
        hit = await asyncio.to_thread(compute, *args)
        history.keep(key, hit)
    return hit
