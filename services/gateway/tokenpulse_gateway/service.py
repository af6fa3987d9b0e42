"""The gateway service: the REST API plus, when ``persist`` is on, the store writer."""

from __future__ import annotations

from fastapi import FastAPI
from tokenpulse_shared.service import Context

from tokenpulse_gateway.app import create_app
from tokenpulse_gateway.writer import StoreWriter


class GatewayService:
    name = "gateway"

    def __init__(self) -> None:
        self.writer: StoreWriter | None = None
        self.app: FastAPI | None = None

    def register(self, ctx: Context) -> None:
        assert ctx.store is not None, "the gateway owns the store: configure TOKENPULSE_CLICKHOUSE_URL"
        ctx.settings.require_admin_token()
        if ctx.settings.persist:
            self.writer = StoreWriter(ctx.store)
            self.writer.register(ctx)
        self.app = create_app(ctx)
        self.app.state.writer = self.writer
        if self.writer is not None:
            self.writer.on_stored.append(self.app.state.live.on_stored)

    async def start(self, ctx: Context) -> None:
        assert self.app is not None
        await self.app.state.mcp.start()  # /mcp's session manager lives as long as the service

    async def stop(self) -> None:
        if self.app is not None:
            await self.app.state.mcp.stop()
