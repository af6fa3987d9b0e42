"""The gateway service: the REST API plus, when ``persist`` is on, the store writer."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from tokenpulse_shared.service import ASGIApp, Context, StoreAccess

from tokenpulse_gateway.app import create_app
from tokenpulse_gateway.market_watch import MarketStateWatch
from tokenpulse_gateway.writer import StoreWriter


class GatewayService:
    name = "gateway"
    store_access = StoreAccess.OWNER  # migrates the store and hosts the writer that persists the topics

    def __init__(self) -> None:
        self.writer: StoreWriter | None = None
        self.app: FastAPI | None = None
        self.market_watch: MarketStateWatch | None = None
        self.ready = asyncio.Event()  # nothing to rebuild: the API answers from the store once the bus runs

    def http_app(self) -> ASGIApp | None:
        return self.app

    def register(self, ctx: Context) -> None:
        assert ctx.store is not None, "the gateway owns the store: configure TOKENPULSE_CLICKHOUSE_URL"
        if ctx.settings.gateway.persist:
            self.writer = StoreWriter(ctx.store)
            self.writer.register(ctx)
        self.app = create_app(ctx)
        self.app.state.writer = self.writer
        if self.writer is not None:
            self.writer.on_stored.append(self.app.state.live.on_stored)
            # the process that stores the daily data publishes the market state when that data changes it
            state = self.app.state
            self.market_watch = MarketStateWatch(ctx.bus, state.queries.analytics, state.caches.market)
            self.writer.on_stored.append(self.market_watch.on_stored)

    async def start(self, ctx: Context) -> None:
        assert self.app is not None
        await self.app.state.mcp.start()  # /mcp's session manager lives as long as the service
        self.ready.set()

    async def stop(self) -> None:
        if self.market_watch is not None:
            await self.market_watch.stop()
        if self.app is not None:
            await self.app.state.board.stop()
            await self.app.state.mcp.stop()
