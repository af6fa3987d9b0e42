"""What a service module is: handlers registered on a bus, a lifecycle, and what it needs from the runtime.

Each service (ingest, scoring, alerts, gateway) exposes a class implementing :class:`Service`.
The runtime builds the chosen services, opens the store they ask for (:attr:`Service.store_access`),
builds the bus (in-process or Kafka), then calls ``register`` on every service before starting the
bus, ``start`` after it, and ``stop`` in reverse order; it serves the service's :meth:`Service.http_app`
if it has one, and waits for every :attr:`Service.ready` before calling the process warm. Business
logic never knows which bus it runs on: that is the whole point of embedded vs distributed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from tokenpulse_shared.bus import Bus
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.store import Store

ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]
]


class StoreAccess(Enum):
    """What a service needs of the ClickHouse store; the runtime opens the most any chosen service needs."""

    NONE = "none"  # works from the bus alone (uses the store if the process has one, e.g. embedded mode)
    WARM_UP = "warm-up"  # reads history at start from a ClickHouse server when one is configured; never writes
    OWNER = "owner"  # opens it read-write and migrates it: hosts the store writer


@dataclass
class Context:
    """What a service gets from the runtime."""

    settings: Settings
    bus: Bus
    store: Store | None = None
    embedded: bool = False
    status: dict[str, Any] = field(default_factory=dict)


class Service(Protocol):
    name: str
    store_access: StoreAccess
    ready: asyncio.Event  # set once warm (state rebuilt, rules loaded): readiness and gc.freeze wait for it

    def register(self, ctx: Context) -> None:
        """Subscribe handlers on ``ctx.bus`` (called before the bus starts)."""

    async def start(self, ctx: Context) -> None:
        """Start background work (called after the bus started)."""

    async def stop(self) -> None:
        """Stop background work; flush what is buffered."""

    def http_app(self) -> ASGIApp | None:
        """The service's own HTTP API (served on TOKENPULSE_PORT), or None: the runtime serves its ops endpoint."""
