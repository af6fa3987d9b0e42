"""Read Tokenpulse's signals and reference prices with a plain Kafka client (aiokafka), no Tokenpulse code."""

import asyncio
import json
import os
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer


def price_rows(batch: dict) -> list[tuple]:
    """A tokenpulse.prices.v2 message is a batch: one list per column, row i is the i-th value of each."""
    times = [datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000) for us in batch["ts_us"]]
    rows = zip(times, batch["symbol"], batch["price"], batch["stale"], strict=True)
    return [(t.isoformat(), symbol, "price", price, "stale" if stale else "fresh") for t, symbol, price, stale in rows]


def signal_rows(s: dict) -> list[tuple]:
    return [(s["ts"], s["symbol"], s["interval"], s["direction"], s["strength"], "; ".join(s["reasons"]))]


async def main() -> None:
    consumer = AIOKafkaConsumer(
        "tokenpulse.signals.v1",
        "tokenpulse.prices.v2",
        bootstrap_servers=os.environ.get("KAFKA", "localhost:9094"),  # compose publishes Kafka on 9094
        group_id=os.environ.get("GROUP", "my-signal-reader"),  # your own group: Kafka remembers your place
        auto_offset_reset="earliest",  # a new group starts at the beginning of the topic
    )
    await consumer.start()
    try:
        async for msg in consumer:  # one token stays in one partition: its signals and prices arrive in order
            # a value is one JSON object (docs/schemas/); anyone with write access to the topic can put
            # something else there, so a robust reader skips what it cannot read
            try:
                doc = json.loads(msg.value)
                lines = price_rows(doc) if msg.topic == "tokenpulse.prices.v2" else signal_rows(doc)
            except (ValueError, TypeError, KeyError, OverflowError):
                print(f"skipped an unreadable message at offset {msg.offset} of {msg.topic}", flush=True)
                continue
            for line in lines:
                print(*line, flush=True)
    finally:
        await consumer.stop()


asyncio.run(main())
