"""Services wired in-process, as embedded mode wires them, for tests and benchmarks."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from tokenpulse_gateway.live import LiveState, StreamHub
from tokenpulse_gateway.writer import StoreWriter
from tokenpulse_ingest.backfill import publish_history
from tokenpulse_ingest.bundle import Bar
from tokenpulse_ingest.service import IngestService
from tokenpulse_shared.bus import Bus
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.events import Interval
from tokenpulse_shared.service import Context, Service
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.store import Store
from tokenpulse_shared.topics import Topic
from tokenpulse_shared.universe import UniverseFollower


@contextlib.asynccontextmanager
async def chdb_store(path: Path, fresh: bool = False) -> AsyncIterator[Store]:
    """A real ClickHouse engine (chDB) at ``path`` (emptied first if ``fresh``), migrated; closed on leaving."""
    if fresh:
        shutil.rmtree(path, ignore_errors=True)
    store = await Store(f"chdb://{path}").open()
    try:
        yield store
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def ingest_and_follower(settings: Settings) -> AsyncIterator[tuple[Context, UniverseFollower]]:
    """A started embedded ingest on an in-memory bus, and a follower of the universe it publishes (as the
    gateway follows it); both stopped on leaving."""
    bus = InMemoryBus()
    ctx = Context(settings=settings, bus=bus, embedded=True)
    ingest, follower = IngestService(), UniverseFollower()
    ingest.register(ctx)
    follower.follow(bus, "gateway-universe")
    await bus.start()
    await ingest.start(ctx)
    try:
        yield ctx, follower
    finally:
        await ingest.stop()
        await bus.stop()


def live_state() -> LiveState:
    """The gateway's live state on an in-memory bus with no store: answers from memory only (unit tests)."""
    ctx = Context(
        settings=Settings(runtime={"symbols": ["BTC"]}, ingest={"live_feed": "off"}),
        bus=InMemoryBus(),
        store=None,
        embedded=True,
    )
    return LiveState(ctx, None, StreamHub())  # type: ignore[arg-type]


def embedded(settings: Settings, store: Store, *services: Service) -> tuple[InMemoryBus, Context]:
    """A new in-memory bus and an embedded Context on it, with ``services`` registered in order."""
    bus = InMemoryBus()
    ctx = Context(settings=settings, bus=bus, store=store, embedded=True)
    for service in services:
        service.register(ctx)
    return bus, ctx


@contextlib.asynccontextmanager
async def keyed_client(app: Any, name: str = "tests") -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the gateway's ASGI app (no socket) that sends a new free key of its own."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        client.headers["X-API-Key"] = (await client.post("/v1/keys", json={"name": name})).json()["key"]
        yield client


async def store_history(store: Store, settings: Settings, series: list[tuple[str, Interval, list[Bar]]]) -> None:
    """The history published on an in-memory bus to the store writer, as embedded mode stores it."""
    bus = InMemoryBus()
    StoreWriter(store).register(Context(settings=settings, bus=bus, store=store))
    await bus.start()
    await publish_history(bus, series)
    await bus.drain()
    await bus.stop()


def collected(bus: Bus, topic: Topic, group: str) -> list[Any]:
    """A list that fills with every event ``topic`` delivers to ``group`` (subscribed before the bus starts)."""
    got: list[Any] = []

    async def collect(events: list[Any]) -> None:
        got.extend(events)

    bus.subscribe(topic, group, collect)
    return got
