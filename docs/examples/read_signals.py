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
        value_deserializer=json.loads,  # every value is one JSON object (docs/schemas/tokenpulse.signals.v1.json)
    )
    await consumer.start()
    try:
        async for msg in consumer:  # the key is the token symbol: one token's signals arrive in order
            s = msg.value
            print(
                s["ts"], s["symbol"], s["interval"], s["direction"], s["strength"], "; ".join(s["reasons"]), flush=True
            )
    finally:
        await consumer.stop()


asyncio.run(main())
