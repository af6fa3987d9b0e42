"""Services wired in-process, as embedded mode wires them, for tests and benchmarks."""

from __future__ import annotations

from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.service import Context, Service
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.store import Store


def embedded(settings: Settings, store: Store, *services: Service) -> tuple[InMemoryBus, Context]:
    """A new in-memory bus and an embedded Context on it, with ``services`` registered in order."""
    bus = InMemoryBus()
    ctx = Context(settings=settings, bus=bus, store=store, embedded=True)
    for service in services:
        service.register(ctx)
    return bus, ctx
