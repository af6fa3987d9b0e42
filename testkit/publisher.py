"""A steady publisher on a thread of its own, for tests that stop and restart services while events flow."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from tokenpulse_shared.bus.kafka import KafkaBus
from tokenpulse_shared.events import Event
from tokenpulse_shared.topics import Topic


class PacedPublisher(threading.Thread):
    """Publishes ``events`` to ``topic`` in chunks, pausing between them, on its own event loop; ``sent`` counts
    what the broker acknowledged, ``error`` holds what stopped it."""

    def __init__(
        self, bootstrap: str, topic: Topic, events: Sequence[Event], *, chunk: int, pause_s: float, client_id: str
    ) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.events = bootstrap, topic, events
        self.chunk, self.pause_s, self.client_id = chunk, pause_s, client_id
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._publish())
        except BaseException as exc:
            self.error = exc

    async def _publish(self) -> None:
        bus = KafkaBus(self.bootstrap, client_id=self.client_id)
        await bus.start()
        try:
            for i in range(0, len(self.events), self.chunk):
                await bus.publish(self.topic, self.events[i : i + self.chunk])
                self.sent = min(i + self.chunk, len(self.events))
                await asyncio.sleep(self.pause_s)
        finally:
            await bus.stop()
