"""The Kafka broker the benchmarks run against: TOKENPULSE_TEST_KAFKA when set, else a KRaft broker started
with scripts/kafka-local.sh in ``work/kafka`` for the duration of the block and removed after it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "kafka-local.sh"


@contextmanager
def kafka(work: Path, *, fresh: bool = False) -> Iterator[str]:
    """Yields the bootstrap address; ``fresh`` starts a broker of its own even when one is shared."""
    shared = None if fresh else os.environ.get("TOKENPULSE_TEST_KAFKA")
    if shared:
        yield shared
        return
    out = subprocess.run([str(SCRIPT), "start", str(work / "kafka")], capture_output=True, text=True, check=True)
    try:
        yield out.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([str(SCRIPT), "stop", str(work / "kafka"), "--clean"], check=False)


async def send_batches(
    producer: Any, topic: str, by_partition: dict[int, list[tuple[bytes | None, bytes]]]
) -> list[Any]:
    """Sends each partition's messages as record batches (aiokafka's batch API: a per-message send costs
    several times more); a message too large for an empty batch goes alone. Returns the send futures."""
    futures = []
    for partition, messages in by_partition.items():
        batch = producer.create_batch()
        for key, value in messages:
            if batch.append(key=key, value=value, timestamp=None) is None:
                batch.close()
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    futures.append(await producer.send(topic, value, key=key, partition=partition))
                    batch = producer.create_batch()
        if batch.record_count():
            batch.close()
            futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures
