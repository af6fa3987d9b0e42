"""Publishes the market state on ``tokenpulse.market-state.v1`` when it changes.

The process that stores the daily data (the store writer) looks again shortly after a batch of daily candles,
market caps, grades or signals is stored: when the latest day's state differs from the one it published last
(or it has published none since it started), it publishes it. Every publisher gives the same event the same
``event_id`` (day and state), so the copies from replicas or a restart are dropped by a consumer's dedup.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Set
from datetime import UTC, date, datetime
from typing import Any

import structlog
from tokenpulse_shared.bus import Bus
from tokenpulse_shared.events import Interval, MarketStateEvent
from tokenpulse_shared.topics import MARKET_STATE

from tokenpulse_gateway.caches import MarketHistory
from tokenpulse_gateway.errors import ApiError
from tokenpulse_gateway.market_data import MarketAnalytics
from tokenpulse_gateway.queries.analytics import AnalyticsQueries
from tokenpulse_gateway.routes.market import current_record

log = structlog.get_logger(__name__)
WATCHED = ("market_caps", "grades", "signals")
"""tables whose rows move the state (and daily candles, picked out of the candles table)"""


def moves_state(table: str, series: Set[tuple[str, str]]) -> bool:
    """Whether rows stored in ``table`` (of these (symbol, interval) series) can move the market state."""
    if table == "candles":
        return any(interval == Interval.D1.value for _, interval in series)
    return table in WATCHED


def state_event(day: dict[str, Any], previous: str | None) -> MarketStateEvent:
    return MarketStateEvent(
        event_id=f"market-state-{day['date']}-{day['state']}",
        ts=datetime.combine(date.fromisoformat(day["date"]), datetime.min.time(), UTC),
        state=day["state"],
        previous_state=previous,
        score=day["score"],
        breadth=day["breadth"],
        components=day["components"],
        total_market_cap=day["total_market_cap"],
        btc_dominance=day["btc_dominance"],
    )


class MarketStateWatch:
    def __init__(self, bus: Bus, queries: AnalyticsQueries, cache: MarketHistory, delay_s: float = 2.0) -> None:
        self.bus, self.queries, self.cache = bus, queries, cache
        self.delay_s = delay_s
        """batches of a backfill arrive back to back: one look after they settle, not one per batch"""
        self.published: tuple[str, str] | None = None
        self._task: asyncio.Task[None] | None = None

    def on_stored(self, table: str, series: Set[tuple[str, str]]) -> None:
        if moves_state(table, series) and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._after_delay())

    async def _after_delay(self) -> None:
        await asyncio.sleep(self.delay_s)
        try:
            await self.check()
        except Exception:  # a failed look must not end the watch: the next stored batch looks again
            log.exception("market state check failed")

    async def check(self) -> MarketStateEvent | None:
        """Publish the latest day's state if it is not the one published last; the event published, if any."""
        try:
            record = await current_record(MarketAnalytics(self.queries, self.cache))
        except ApiError:  # no history yet
            return None
        latest = record["days"][-1]
        if latest["state"] is None or (self.published and self.published[1] == latest["state"]):
            return None
        event = state_event(latest, self.published[1] if self.published else None)
        await self.bus.publish(MARKET_STATE, [event])
        self.published = (latest["date"], latest["state"])
        log.info("market state published", state=event.state, day=latest["date"], score=round(event.score, 1))
        return event

    async def idle(self) -> None:
        """Wait for a pending look to finish (tests, shutdown)."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await self.idle()
