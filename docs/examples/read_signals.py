"""Read Tokenpulse's signals with a plain Kafka client (aiokafka), no Tokenpulse code involved."""

import asyncio
import json
import os

from aiokafka import AIOKafkaConsumer


async def main() -> None:
    consumer = AIOKafkaConsumer(
        "tokenpulse.signals.v1",
        bootstrap_servers=os.environ.get("KAFKA", "localhost:9094"),  # compose publishes Kafka on 9094
        group_id=os.environ.get("GROUP", "my-signal-reader"),  # your own group: Kafka remembers your place
        auto_offset_reset="earliest",  # a new group starts at the beginning of the topic
    )
    await consumer.start()
    try:
        async for msg in consumer:  # the key is the token symbol: one token's signals arrive in order
            # a value is one JSON object (docs/schemas/tokenpulse.signals.v1.json); anyone with write access
            # to the topic can put something else there, so a robust reader skips what it cannot read
            try:
                s = json.loads(msg.value)
                line = (s["ts"], s["symbol"], s["interval"], s["direction"], s["strength"], "; ".join(s["reasons"]))
            except (ValueError, TypeError, KeyError):
                print(f"skipped an unreadable message at offset {msg.offset}", flush=True)
                continue
            print(*line, flush=True)
    finally:
        await consumer.stop()


asyncio.run(main())
