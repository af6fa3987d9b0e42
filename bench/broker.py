"""The Kafka broker the benchmarks run against: TOKENPULSE_TEST_KAFKA when set, else a KRaft broker started
with scripts/kafka-local.sh in ``work/kafka`` for the duration of the block and removed after it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
