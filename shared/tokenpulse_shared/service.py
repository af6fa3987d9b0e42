"""What a service module is: handlers registered on a bus, plus a lifecycle.

Each service (ingest, scoring, alerts, gateway) exposes a class implementing
:class:`Service`. The runtime builds the bus (in-process or Kafka) and the
store, then calls ``register`` on every chosen service before starting the
bus, ``start`` after it, and ``stop`` in reverse order. Business logic never
knows which bus it runs on: that is the whole point of embedded vs distributed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from tokenpulse_shared.bus import Bus
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.store import Store


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

    def register(self, ctx: Context) -> None:
        """Subscribe handlers on ``ctx.bus`` (called before the bus starts)."""

    async def start(self, ctx: Context) -> None:
        """Start background work (called after the bus started)."""

    async def stop(self) -> None:
        """Stop background work; flush what is buffered."""
