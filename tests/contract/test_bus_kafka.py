"""The bus contract on the Kafka adapter, against the real broker (buses of one group prefix stand for a
service's replicas)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tokenpulse_shared.bus import Bus
from tokenpulse_shared.bus.kafka import KafkaBus

from tests.contract.bus import BusContract, MakeBus

pytestmark = pytest.mark.kafka


class TestKafkaBus(BusContract):
    keeps_history = True
    rebalances = True

    @pytest.fixture
    async def make_bus(self, kafka_bootstrap: str) -> AsyncIterator[MakeBus]:
        prefix = f"contract-{uuid.uuid4().hex[:8]}"  # this test's groups: they read the topics from the start
        made: list[KafkaBus] = []

        def make(**kw: Any) -> Bus:
            bus = KafkaBus(kafka_bootstrap, group_prefix=prefix, backoff_s=0.01, **kw)
            made.append(bus)
            return bus

        yield make
        await asyncio.gather(*(bus.stop() for bus in made))

    async def quiet(self, bus: Bus) -> None:
        await asyncio.sleep(1.5)  # what would come again (a redelivery) arrives within a few polls
