"""The ingest service: ticks in, candles and reference prices out; live or synthetic feed.

Consumes ``tokenpulse.ticks.v1`` (consumer group ``ingest``), builds candles
for every interval and the reference price, and publishes them on
``tokenpulse.candles.v1`` and ``tokenpulse.prices.v1``. Ticks too late to be
placed in a candle go to the dead-letter topic with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from datetime import UTC, datetime

from tokenpulse_shared.bus.base import dead_letter_for
from tokenpulse_shared.events import Interval, TickEvent
from tokenpulse_shared.service import Context
from tokenpulse_shared.telemetry import DEAD_LETTERS, connector_delivered, set_connector_health
from tokenpulse_shared.topics import CANDLES, DEAD_LETTER, PRICES, TICKS

from tokenpulse_ingest.bundle import iter_bundle
from tokenpulse_ingest.candles import CandleBuilder
from tokenpulse_ingest.prices import PriceReconciler
from tokenpulse_ingest.synthetic import SyntheticFeed, TokenState, daily_volatility

log = logging.getLogger(__name__)


class IngestService:
    name = "ingest"

    def __init__(self) -> None:
        self.builder = CandleBuilder()
        self.reconciler = PriceReconciler()
        self.ctx: Context | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.feed: SyntheticFeed | None = None

    def register(self, ctx: Context) -> None:
        self.ctx = ctx
        ctx.bus.subscribe(TICKS, self.name, self.on_ticks)

    async def on_ticks(self, ticks: list[TickEvent]) -> None:
        assert self.ctx is not None
        bus = self.ctx.bus
        result = self.builder.add(ticks)
        if result.candles:
            await bus.publish(CANDLES, result.candles)
        late = {id(t) for t in result.late}
        prices = self.reconciler.update([t for t in ticks if id(t) not in late])
        if prices:
            await bus.publish(PRICES, prices)
        if result.late:
            DEAD_LETTERS.labels(self.name, TICKS.name).inc(len(result.late))
            await bus.publish(
                DEAD_LETTER,
                [
                    dead_letter_for(TICKS, self.name, "late tick: its candles are already final", event=t)
                    for t in result.late
                ],
            )

    async def start(self, ctx: Context) -> None:
        self._tasks.append(asyncio.create_task(self._clock(), name="ingest-clock"))
        mode = ctx.settings.live_feed
        if mode == "off":
            ctx.status["feed"] = "off"
            return
        # Live exchange connectors arrive with issue #3; until then `auto` means synthetic.
        ctx.status["feed"] = "synthetic"
        log.info("live feed: synthetic ticks (no exchange connectors configured)")
        self.feed = SyntheticFeed(
            self._seed_states(ctx), period_s=ctx.settings.synthetic_tick_s, seed=ctx.settings.synthetic_seed
        )
        self._tasks.append(asyncio.create_task(self._synthetic(), name="ingest-synthetic"))

    def _seed_states(self, ctx: Context) -> list[TokenState]:
        states = []
        daily = {s: bars for s, i, bars in iter_bundle(ctx.settings.bundle_dir, ctx.settings.symbols, [Interval.D1])}
        for symbol in ctx.settings.symbols:
            bars = daily.get(symbol)
            if not bars:
                log.warning("no bundled history for %s: not generating synthetic ticks", symbol)
                continue
            recent = bars[-90:]
            avg_volume = sum(b.volume for b in recent) / len(recent)
            period = ctx.settings.synthetic_tick_s
            states.append(
                TokenState(
                    symbol,
                    bars[-1].close,
                    daily_volatility([b.close for b in recent]),
                    typical_size=max(avg_volume * period / 86400.0, 1e-6),
                )
            )
        return states

    async def _synthetic(self) -> None:
        assert self.ctx is not None and self.feed is not None
        while True:
            try:
                ticks = self.feed.step(datetime.now(UTC))
                await self.ctx.bus.publish(TICKS, ticks)
                set_connector_health("synthetic", True)
                connector_delivered("synthetic", len(ticks))
            except Exception:
                set_connector_health("synthetic", False)
                log.exception("synthetic feed failed to publish")
            await asyncio.sleep(self.feed.period_s)

    async def _clock(self) -> None:
        assert self.ctx is not None
        while True:
            await asyncio.sleep(1.0)
            try:
                closed = self.builder.tick_clock()
                if closed:
                    await self.ctx.bus.publish(CANDLES, closed)
            except Exception:
                log.exception("candle clock failed")

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
