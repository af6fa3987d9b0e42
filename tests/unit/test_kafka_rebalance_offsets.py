"""What the Kafka bus tells a subscription's revoke hook about where each partition stood. aiokafka fills in a
partition's position only outside the rebalance that calls the hook, so a partition assigned a moment before the
revoke has none yet: asking for it must not hold the rebalance (two replicas starting together hung there)."""

from __future__ import annotations

import asyncio
import time

from aiokafka import TopicPartition
from tokenpulse_shared.bus.kafka import REVOKE_POSITION_WAIT_S, _offsets


class Consumer:
    """A consumer whose partition 1 has no position yet: asking waits as aiokafka's does (until it is reset)."""

    def __init__(self) -> None:
        self.never = asyncio.Event()

    async def position(self, tp: TopicPartition) -> int:
        if tp.partition == 1:
            await self.never.wait()
        return 100 + tp.partition

    async def committed(self, tp: TopicPartition) -> int | None:
        return None if tp.partition == 2 else 50 + tp.partition


TPS = [TopicPartition("t", p) for p in range(3)]


def test_a_revoke_reports_the_positions_known_and_leaves_out_a_partition_without_one() -> None:
    started = time.monotonic()
    got = asyncio.run(asyncio.wait_for(_offsets(Consumer(), TPS, at_revoke=True), 10))  # fails, not hangs
    assert got == {0: 100, 2: 102}
    assert time.monotonic() - started < REVOKE_POSITION_WAIT_S + 1


def test_an_assign_reports_the_committed_offsets_of_the_partitions_that_have_one() -> None:
    assert asyncio.run(_offsets(Consumer(), TPS, at_revoke=False)) == {0: 50, 1: 51}
