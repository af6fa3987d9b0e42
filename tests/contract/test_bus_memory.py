"""The bus contract on the in-process adapter (peers of one bus stand for a service's replicas)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from tokenpulse_shared.bus import Bus
from tokenpulse_shared.bus.memory import InMemoryBus

from tests.contract.bus import BusContract, MakeBus


class TestInMemoryBus(BusContract):
    keeps_history = False

    @pytest.fixture
    async def make_bus(self) -> AsyncIterator[MakeBus]:
        made: list[InMemoryBus] = []

        def make(**kw: Any) -> Bus:
            bus = made[0].peer(**kw) if made else InMemoryBus(backoff_s=0.001, **kw)
            made.append(bus)
            return bus

        yield make
        for bus in made:
            await bus.stop()

    async def quiet(self, bus: Bus) -> None:
        assert isinstance(bus, InMemoryBus)
        await bus.drain()
