"""docs/topics.md "Consuming the topics": the plain-aiokafka example reads signals and price rows from the real broker.

The example (``docs/examples/read_signals.py``, shown verbatim in docs/topics.md) runs as its own process
with only ``KAFKA`` and ``GROUP`` set; signals of a symbol unique to this run are published with
Tokenpulse's bus, and the example must print each of them, in order, with its reasons.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tokenpulse_shared.batches import PriceBatch
from tokenpulse_shared.bus.kafka import KafkaBus
from tokenpulse_shared.events import Direction, Interval, PriceEvent, SignalEvent
from tokenpulse_shared.topics import PRICES_V2, SIGNALS

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "read_signals.py"


def test_the_topics_doc_shows_the_example_verbatim() -> None:
    page = (ROOT / "docs" / "topics.md").read_text()
    assert "## Consuming the topics" in page
    body = EXAMPLE.read_text().split('"""', 2)[2].strip()  # the code after the docstring
    assert body in page


async def publish(bootstrap: str, signals: list[SignalEvent], prices: list[PriceEvent]) -> None:
    bus = KafkaBus(bootstrap, client_id="e2e-signals")
    await bus.start()
    try:
        await bus.publish(SIGNALS, signals)
        await bus.publish_rows(PRICES_V2, PriceBatch.from_events(prices))
    finally:
        await bus.stop()


def test_a_plain_aiokafka_consumer_reads_the_signals(kafka_bootstrap: str) -> None:
    symbol = "S" + uuid.uuid4().hex[:7].upper()
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    signals = [
        SignalEvent(
            symbol=symbol,
            ts=t0 + timedelta(days=i),
            interval=Interval.D1,
            direction=Direction.BULLISH if i % 2 == 0 else Direction.BEARISH,
            strength=0.5 + i / 10,
            reasons=[f"reason {i}", "trend"],
        )
        for i in range(3)
    ]
    prices = [
        PriceEvent(symbol=symbol, ts=t0 + timedelta(microseconds=7 + i), price=100.5 + i, stale=i == 1)
        for i in range(2)
    ]
    asyncio.run(publish(kafka_bootstrap, signals, prices))
    env = {**os.environ, "KAFKA": kafka_bootstrap, "GROUP": f"example-{uuid.uuid4().hex[:8]}"}
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(symbol in line for line in lines) < len(signals) + len(prices):
            assert proc.poll() is None, "\n".join(lines)
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(10)
    ours = [line for line in lines if symbol in line and " price " not in line]
    assert ours == [
        f"{s.ts.isoformat().replace('+00:00', 'Z')} {symbol} 1d {s.direction.value} {s.strength} reason {i}; trend"
        for i, s in enumerate(signals)
    ], "\n".join(lines[-20:])
    rows = [line for line in lines if symbol in line and " price " in line]
    assert rows == [f"{p.ts.isoformat()} {symbol} price {p.price} {'stale' if p.stale else 'fresh'}" for p in prices], (
        "\n".join(lines[-20:])
    )
