"""The partitioning docs/design/0001-batch-hot-path.md relies on, pinned against aiokafka.

A token's batch rows (``tokenpulse.ticks.v2``, sent to a partition chosen by us) and an outside producer's
per-trade messages (``tokenpulse.ticks.v1``, keyed by the symbol) must land in the same partition number and,
in the ingest group, on the same member. The rule for the first is the Java client's murmur2 of the key; the
second needs the range assignor: aiokafka's default round-robin splits the pair."""

from __future__ import annotations

import pytest
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata
from aiokafka.partitioner import DefaultPartitioner, murmur2

PAIR = ["tokenpulse.ticks.v1", "tokenpulse.ticks.v2"]


class _Cluster:
    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(6))


def partition_of(symbol: str, partitions: int) -> int:
    """The design's rule for where a batch row of ``symbol`` goes."""
    return (murmur2(symbol.encode()) & 0x7FFFFFFF) % partitions


def owners(assignor: type, members: int) -> dict[tuple[str, int], str]:
    metadata = {f"ingest-{i}": ConsumerProtocolMemberMetadata(0, PAIR, b"") for i in range(members)}
    out = {}
    for member, assignment in assignor.assign(_Cluster(), metadata).items():
        for topic, partitions in assignment.assignment:
            out.update({(topic, p): member for p in partitions})
    return out


@pytest.mark.parametrize("symbol", ["BTC", "ETH", "SOL", "DOGE", "PEPE", "1INCH", "A" * 15])
def test_batch_rows_go_where_a_keyed_message_goes(symbol: str) -> None:
    all_partitions = list(range(6))
    assert partition_of(symbol, 6) == DefaultPartitioner()(symbol.encode(), all_partitions, all_partitions)


@pytest.mark.parametrize("members", [1, 2, 3, 4, 5, 6])
def test_range_assigns_both_topics_partition_by_partition_to_one_member(members: int) -> None:
    by = owners(RangePartitionAssignor, members)
    assert all(by[(PAIR[0], p)] == by[(PAIR[1], p)] for p in range(6))


def test_round_robin_splits_the_pair() -> None:
    by = owners(RoundRobinPartitionAssignor, 4)
    assert any(by[(PAIR[0], p)] != by[(PAIR[1], p)] for p in range(6))
