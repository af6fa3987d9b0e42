"""Per-key request limits (per minute and per day) with the `limits` library.

Moving windows in process memory: exact for one gateway replica; with
several replicas each enforces its own share (shared storage comes with the
API-key product, issue #8). Over a limit the API answers 429 with Retry-After.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItemPerDay, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: int
    remaining_minute: int
    remaining_day: int


class KeyLimiter:
    def __init__(self, per_minute: int, per_day: int) -> None:
        self.items = (RateLimitItemPerMinute(per_minute), RateLimitItemPerDay(per_day))
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    async def hit(self, key_id: str) -> Verdict:
        for item in self.items:
            if not await self.limiter.test(item, key_id):
                stats = await self.limiter.get_window_stats(item, key_id)
                retry = max(1, math.ceil(stats.reset_time - time.time()))
                return Verdict(False, retry, *await self._remaining(key_id))
        for item in self.items:
            await self.limiter.hit(item, key_id)
        return Verdict(True, 0, *await self._remaining(key_id))

    async def _remaining(self, key_id: str) -> tuple[int, int]:
        minute, day = [await self.limiter.get_window_stats(i, key_id) for i in self.items]
        return minute.remaining, day.remaining
